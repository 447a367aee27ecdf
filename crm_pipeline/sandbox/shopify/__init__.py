"""The sandbox's Shopify Admin GraphQL API, executed against Shopify's published schema.

`endpoint` answers one request: parse and validate the document with graphql-core against the
schema of the API version in the path (`crm_pipeline.shopify_admin_schema`), price it (`cost`),
then execute it with the root fields of `resolvers` over the store. Records become GraphQL
nodes in `nodes`, connections are paged in `paging`, bulk operations live in `bulk`, webhook
subscriptions in `webhooks`. A document the real schema refuses is refused here too.
"""
