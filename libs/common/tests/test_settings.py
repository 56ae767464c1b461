from ballast_common.settings import ServiceSettings, service_config


class DemoSettings(ServiceSettings):
    model_config = service_config("DEMO_SVC_")


def test_service_prefix_overrides_shared_prefix(monkeypatch):
    monkeypatch.setenv("BALLAST_DATABASE_URL", "postgresql://shared/db")
    monkeypatch.setenv("BALLAST_TOPIC_PREFIX", "shared.")
    monkeypatch.setenv("DEMO_SVC_TOPIC_PREFIX", "mine.")
    settings = DemoSettings()
    assert settings.database_url == "postgresql://shared/db"
    assert settings.topic_prefix == "mine."


def test_defaults_point_at_the_local_stack(monkeypatch):
    for name in ("BALLAST_DATABASE_URL", "BALLAST_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    settings = DemoSettings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert "127.0.0.1:15432" in settings.database_url
    assert settings.otlp_endpoint == ""
