"""The demo's direct index: seeded, weights that add up, a covariance the optimizer can use,
accounts holding the index with lots that add up, and a model body model-hub-svc accepts."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from ballast_demo import direct_index as di
from model_hub_svc.model_rules import direct_index_problems
from model_hub_svc.schemas import ModelIn


def test_the_index_is_seeded_weighted_and_spread_over_the_sectors():
    names = di.index_names(300, seed=7)
    assert names == di.index_names(300, seed=7)
    assert sum(n.weight for n in names) == Decimal(1)
    assert len({n.symbol for n in names}) == 300
    assert {n.sector for n in names} == {s for s, _ in di.SECTORS}
    betas = [float(n.exposures["market"]) for n in names]
    assert 0.8 < sum(betas) / len(betas) < 1.2
    for changed in (di.reconstituted(names), di.changed_weights(names)):
        assert sum(n.weight for n in changed) == Decimal(1)
    assert len(di.reconstituted(names, leaving=8)) == 292


def test_the_covariance_is_symmetric_and_positive_definite():
    cov = np.array([[float(x) for x in row] for row in di.covariance()])
    assert np.allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    assert abs(np.sqrt(cov[0, 0]) - 0.16) < 1e-9  # the market's 16% a year


def test_accounts_hold_the_index_with_lots_that_add_up_and_some_exclude_a_name():
    names = di.index_names(60, seed=1)
    accounts = di.build_accounts(names, "dx", 6, exclusion=names[3].symbol)
    assert [bool(a.restrictions) for a in accounts] == [True, False, False, True, False, False]
    for account in accounts:
        assert account.model_id == "dx" and account.tax_settings
        for symbol, quantity in account.positions.items():
            assert sum(lot.quantity for lot in account.lots[symbol]) == quantity


def test_the_model_body_is_one_model_hub_accepts():
    names = di.index_names(300, seed=7)
    body = ModelIn.model_validate(di.model_body(names, tax_sensitivity="high"))
    assert body.direct_index is not None and body.targets is not None
    assert direct_index_problems(body.direct_index, body.targets) == []
    assert body.direct_index.settings.tax_sensitivity == "high"
