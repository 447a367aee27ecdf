-- Stored predictive model fits (issue 18 item 2, issue 14 item 4).
--
-- Full recomputes (full_refresh, the nightly reconcile, full_recompute, as_of backfills) fit
-- the purchase (MBG/NBD) and spend (Gamma-Gamma) models on every buyer and record the fit here;
-- incremental runs and the worker score only the touched customers with the latest fit instead
-- of refitting on the whole base (crm_pipeline/analytics/score_fits.py). Only parameters and
-- counts: no customer data.

CREATE TABLE IF NOT EXISTS predictive_model_fits (
    fit_id bigserial PRIMARY KEY,
    fitted_at timestamptz NOT NULL DEFAULT now(),
    -- the observation end the model was fitted at (the run's as_of)
    as_of timestamptz NOT NULL,
    -- live customers when fitted: incremental runs refit once the base has grown past a share
    live_customers integer NOT NULL,
    buyers integer NOT NULL,
    method text NOT NULL,
    spend_method text NOT NULL,
    -- crm_pipeline.analytics.predictive.ScoringFit.as_dict(): parameters, settings, fit metadata
    fit jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS predictive_model_fits_fitted_at_idx
    ON predictive_model_fits (fitted_at DESC);
COMMENT ON TABLE predictive_model_fits IS
    'Predictive model fits of full recomputes; incremental runs score with the latest one.';

GRANT SELECT ON predictive_model_fits TO crm_analyst;
