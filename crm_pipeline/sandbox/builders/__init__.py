"""Builders of one generated chunk, layered: persons -> Shopify -> Klaviyo (each reads what the
one before drew). crm_pipeline/sandbox/generate.py runs them per chunk; probabilities are named in
crm_pipeline/sandbox/builders/odds.py."""
