"""Every probability and rate of the generated store, named in one place.

Values are the generator's calibration: changing one changes every store generated for a seed (the
stores are byte-identical for a seed only while these stay). Shares are per live customer of a
chunk; `*_ODDS` tuples are the probabilities of the kinds listed beside them, in order; a
`*_CUTS` tuple holds cumulative thresholds compared with one uniform draw.
"""

# ---- population (per chunk of live customers)
DELETED_SHARE = 0.005
KLAVIYO_ONLY_SHARE = 0.25
GUEST_SHARE = 0.06
BUYER_SHARE = 0.78
# Pareto/NBD-style purchase process: Gamma purchase rates, exponential lifetimes.
LAMBDA_SHAPE = 0.8
LIFETIME_MEAN_YEARS = 2.5
# Sign-up age: HISTORY * Beta(a, b), skewed towards recent sign-ups as in a growing shop.
SIGNUP_AGE_BETA = (1.1, 1.6)

# ---- persons
NAME_FROM_HOME_COUNTRY = 0.85  # else a name from any locale
GB_LANDLINE = 0.3  # of GB numbers in the landline range

# ---- Shopify customers
NO_EMAIL = 0.02
INVALID_EMAIL = 0.002
# phone kinds: none, E.164, national, international, invalid
PHONE_KIND_ODDS = (0.33, 0.50, 0.09, 0.04, 0.04)
# number of addresses: 0, 1, 2, 3
ADDRESS_COUNT_ODDS = (0.15, 0.6, 0.18, 0.07)
ADDRESS_SAME_COUNTRY = 0.92
# address2: none, Apt, Suite, Unit, Floor, Room
ADDRESS_LINE2_ODDS = (0.85, 0.05, 0.04, 0.03, 0.02, 0.01)
ADDRESS_COMPANY = 0.08
ADDRESS_OTHER_NAME = 0.1
ADDRESS_WITH_PHONE = 0.6
# number of tags: 0, 1, 2, 3
TAG_COUNT_ODDS = (0.55, 0.28, 0.12, 0.05)
CUSTOMER_NOTE = 0.07
# state: enabled, disabled, invited, declined
CUSTOMER_STATE_ODDS = (0.70, 0.25, 0.04, 0.01)
VERIFIED_EMAIL = 0.9
TAX_EXEMPT = 0.01
# email consent: subscribed, not_subscribed, unsubscribed, pending
EMAIL_CONSENT_ODDS = (0.42, 0.43, 0.12, 0.03)
CONFIRMED_OPT_IN = 0.3
SMS_CONSENT_ODDS = (0.25, 0.6, 0.1, 0.05)
SMS_CONSENT_FROM_SHOPIFY = 0.8
CUSTOMER_FUTURE_UPDATE = 0.001

# ---- Shopify orders
GUEST_TWO_ORDERS = 0.1
ORDER_IN_FUTURE = 0.0005
# line items per order: 1, 2, 3, 4; quantity per line: 1, 2, 3
LINE_ITEM_COUNT_ODDS = (0.55, 0.27, 0.12, 0.06)
QUANTITY_ODDS = (0.8, 0.15, 0.05)
# financial status: refunded, partially_refunded, pending, voided below these cuts, else paid
FINANCIAL_STATUS_CUTS = (0.04, 0.09, 0.12, 0.15)
RECENT_ORDER_PENDING = 0.5
REFUNDED_CANCELLED = 0.4
OVER_REFUND = 0.03
NEGATIVE_TOTAL = 0.001
# fulfillment: fulfilled below the first cut, partial below the second, else none
FULFILLMENT_CUTS = (0.93, 0.96)
REFUNDED_UNFULFILLED = 0.5
# order email: as the customer's, other casing, whitespace, none
ORDER_EMAIL_ODDS = (0.88, 0.06, 0.02, 0.04)

# ---- Klaviyo profiles
HAS_PROFILE = 0.8
# link kind cuts: phone only below the first (if the phone is valid), other email + external id
# below the second, else the Shopify email
PROFILE_LINK_CUTS = (0.03, 0.05)
# email as is below the first cut, other casing below the second, else whitespace
PROFILE_EMAIL_VARIANT_CUTS = (0.85, 0.95)
PROFILE_EXTERNAL_ID = 0.4
PROFILE_SHOPIFY_PHONE = 0.5
PROFILE_EXTRA_PHONE = 0.1
DUPLICATE_PROFILE = 0.015
DUPLICATE_BY_EMAIL = 0.6
KLAVIYO_ONLY_PHONE_ONLY = 0.1
KLAVIYO_ONLY_WITH_PHONE = 0.2
PROFILE_HAS_NAME = 0.9
CONSENT_FLIP = 0.05
# Klaviyo-only consent: SUBSCRIBED, UNSUBSCRIBED, NEVER_SUBSCRIBED
KLAVIYO_ONLY_CONSENT_ODDS = (0.75, 0.2, 0.05)
# location from the default address below this draw, a city of the country below the next
LOCATION_FROM_ADDRESS = 0.85
LOCATION_FROM_COUNTRY = 0.4
ORGANIZATION = 0.05
JOB_TITLE = 0.03

# ---- Klaviyo events (per profile)
ENGAGEMENT_SHAPE = 0.7  # Gamma(shape, 1/shape): mean 1
OPENS_PER_YEAR = 4.5  # over up to 3 years of life, scaled by /1.5
CLICK_PER_OPEN = 0.13
PRODUCT_VIEWS = 1.6
CART_PER_VIEW = 0.3
ACTIVE_ON_SITE = 1.0

# ---- mutate_store (per picked customer)
MUTATE_ORDER = 0.5  # their latest order changes
MUTATE_REFUND = 0.5  # that change is a refund (when the order is refundable)
MUTATE_NAME = 0.3
MUTATE_PHONE = 0.3
