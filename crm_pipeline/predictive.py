"""The old import path of the predictive models; the code lives in crm_pipeline.analytics.predictive
(fitting, models, scoring). Kept so analysts' notebooks and older imports keep working."""

from crm_pipeline.analytics.predictive import *  # noqa: F403
from crm_pipeline.analytics.predictive import __all__  # noqa: F401
