from ballast_common.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("MODEL_HUB_SVC_")

    # How far a model's weights may sum away from 100% and still be accepted.
    weight_sum_tolerance: float = 1e-6
    # How far (weight, 0.01 = 1 point) a model's asset-class weight may be from its allocation's.
    allocation_tolerance: float = 0.01
