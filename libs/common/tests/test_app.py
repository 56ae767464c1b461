from ballast_common.app import field_path


def test_problem_field_paths_read_like_the_service_rules():
    assert field_path(("body", "accounts", 3, "positions", 0, "quantity")) == (
        "accounts[3].positions[0].quantity"
    )
    assert field_path(("query", "limit")) == "query.limit"
    assert field_path(("body",)) == "body"
