from ballast_common.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("TAXLOT_SVC_")
