"""The GraphQL documents the client sends (validated against Shopify's published schemas in
crm_pipeline_tests/sources/test_shopify_documents.py) and the search string they filter by."""

from __future__ import annotations

from datetime import UTC, datetime

_ADDRESS = """id firstName lastName company address1 address2 city province provinceCode
  country countryCodeV2 zip phone name latitude longitude"""

_CUSTOMER = f"""
  id email firstName lastName phone state tags note verifiedEmail taxExempt
  emailMarketingConsent {{ marketingState marketingOptInLevel consentUpdatedAt }}
  smsMarketingConsent {{
    marketingState marketingOptInLevel consentUpdatedAt consentCollectedFrom
  }}
  addresses {{ {_ADDRESS} }}
  defaultAddress {{ {_ADDRESS} }}
  createdAt updatedAt numberOfOrders amountSpent {{ amount currencyCode }}
  multipassIdentifier taxExemptions lastOrder {{ id }}
"""

# an order's customer journey (`Order.customerJourneySummary`), built by Shopify asynchronously:
# `ready` is false until it is. MarketingEvent.channel is deprecated in both shipped schemas,
# hence `marketingChannelType`.
_VISIT = """id occurredAt source sourceType sourceDescription landingPage referrerUrl referralCode
  utmParameters { source medium campaign content term }
  marketingEvent { id type marketingChannelType sourceAndMedium utmCampaign utmMedium utmSource }"""
_JOURNEY = f"""customerJourneySummary {{
  ready daysToConversion customerOrderIndex
  firstVisit {{ {_VISIT} }}
  lastVisit {{ {_VISIT} }}
}}"""

_ORDER = f"""
  id name email createdAt updatedAt processedAt cancelledAt cancelReason tags
  customer {{ id }}
  displayFinancialStatus displayFulfillmentStatus currencyCode
  totalPriceSet {{ shopMoney {{ amount currencyCode }} }}
  subtotalPriceSet {{ shopMoney {{ amount currencyCode }} }}
  totalTaxSet {{ shopMoney {{ amount currencyCode }} }}
  sourceName
  {_JOURNEY}
"""

# journeys asked again for orders whose journey was not ready when they were pulled
ORDER_JOURNEYS_QUERY = f"""
query OrderJourneys($ids: [ID!]!) {{
  nodes(ids: $ids) {{ ... on Order {{ id sourceName {_JOURNEY} }} }}
}}"""

_LINE_ITEM = """
  id title vendor quantity sku
  product { id productType }
  originalUnitPriceSet { shopMoney { amount currencyCode } }
"""

_REFUND = "id createdAt note totalRefundedSet { shopMoney { amount currencyCode } }"
_REFUND_LINE_ITEM = "lineItem { id } quantity"

CUSTOMERS_QUERY = f"""
query CustomersUpdatedSince($first: Int!, $after: String, $query: String) {{
  customers(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    edges {{ cursor node {{ {_CUSTOMER} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""

ORDERS_QUERY = f"""
query OrdersUpdatedSince($first: Int!, $after: String, $query: String, $lineItemsFirst: Int!) {{
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    edges {{ cursor node {{
      {_ORDER}
      lineItems(first: $lineItemsFirst) {{
        nodes {{ {_LINE_ITEM} }}
        pageInfo {{ hasNextPage endCursor }}
      }}
      refunds {{ {_REFUND} refundLineItems(first: 50) {{ nodes {{ {_REFUND_LINE_ITEM} }} }} }}
    }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""

ORDER_LINE_ITEMS_QUERY = f"""
query OrderLineItems($id: ID!, $first: Int!, $after: String) {{
  node(id: $id) {{
    ... on Order {{
      id
      lineItems(first: $first, after: $after) {{
        nodes {{ {_LINE_ITEM} }}
        pageInfo {{ hasNextPage endCursor }}
      }}
    }}
  }}
}}"""

# bulk queries: nested connections use edges/node and come back as child lines; Shopify refuses
# a connection inside a list field in bulk queries, so refund line items (a connection inside
# the `refunds` list) are looked up afterwards with ORDER_REFUND_LINE_ITEMS_QUERY
BULK_CUSTOMERS = f"{{ customers{{filter}} {{ edges {{ node {{ {_CUSTOMER} }} }} }} }}"
BULK_ORDERS = f"""{{ orders{{filter}} {{ edges {{ node {{
  {_ORDER}
  lineItems {{ edges {{ node {{ {_LINE_ITEM} }} }} }}
  refunds {{ {_REFUND} }}
}} }} }} }}"""

ORDER_REFUND_LINE_ITEMS_QUERY = f"""
query OrderRefundLineItems($ids: [ID!]!, $first: Int!) {{
  nodes(ids: $ids) {{
    ... on Order {{
      id
      refunds {{
        id
        refundLineItems(first: $first) {{
          nodes {{ {_REFUND_LINE_ITEM} }}
          pageInfo {{ hasNextPage }}
        }}
      }}
    }}
  }}
}}"""
# orders per lookup: 10 x (3 + 50 refund line items) points, well under the 1000-point limit;
# an order with a bigger refund is asked again alone with Shopify's largest page

BULK_RUN = """
mutation BulkRunQuery($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message }
  }
}"""

_BULK_FIELDS = """id status errorCode createdAt completedAt objectCount rootObjectCount
  fileSize url partialDataUrl"""

BULK_NODE = f"""
query BulkOperationNode($id: ID!) {{
  node(id: $id) {{ ... on BulkOperation {{ {_BULK_FIELDS} }} }}
}}"""

CURRENT_BULK = f"""
query CurrentBulkOperation {{
  currentBulkOperation(type: QUERY) {{ {_BULK_FIELDS} }}
}}"""

WEBHOOKS_QUERY = """
query WebhookSubscriptions($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    edges { cursor node {
      id topic format
      endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } }
    } }
    pageInfo { hasNextPage endCursor }
  }
}"""

WEBHOOK_CREATE = """
mutation WebhookSubscriptionCreate(
  $topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!
) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic format }
    userErrors { field message }
  }
}"""

WEBHOOK_UPDATE = """
mutation WebhookSubscriptionUpdate($id: ID!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionUpdate(id: $id, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic format }
    userErrors { field message }
  }
}"""

# the topics this API version can subscribe (introspection: also right for versions newer
# than the schemas shipped with the package)
WEBHOOK_TOPICS_QUERY = """
query WebhookTopics {
  __type(name: "WebhookSubscriptionTopic") { enumValues { name } }
}"""


def _search_since(since: datetime) -> str:
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return f"updated_at:>='{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"


# point lookups for a reconcile: a deleted customer comes back as null
CUSTOMER_NODES = """
query CustomerNodes($ids: [ID!]!) {
  nodes(ids: $ids) { ... on Customer { id updatedAt } }
}"""
NODES_PER_QUERY = 250  # Shopify's limit for `nodes(ids:)`

CUSTOMERS_COUNT = """
query CustomersCount {
  customersCount { count precision }
}"""
