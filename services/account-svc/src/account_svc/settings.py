from ballast_common.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("ACCOUNT_SVC_")

    # an account still opening after this many days is a task (GET /tasks, kind overdue)
    opening_overdue_days: int = 5
