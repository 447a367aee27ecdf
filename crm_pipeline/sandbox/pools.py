# Over 500 lines on purpose: mostly data (hand-written cities, area codes, vendors, campaign
# themes) that must stay stable across Faker versions so generated stores stay byte-identical.
"""Value pools for the sandbox store generator.

Faker is slow per call, so it is used once (with a fixed seed) to fill small per-locale pools of
names, streets and postcodes; the generator then indexes these pools with vectorised numpy draws.
Cities, phone plans, products and campaign themes are hand-written so they look real and stay
stable across Faker versions.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from faker import Faker

POOL_SEED = 20261101
NAMES_PER_LOCALE = 300
STREETS_PER_LOCALE = 400


@dataclass(frozen=True)
class City:
    """A real city with the fields Shopify addresses and Klaviyo locations carry."""

    name: str
    province: str
    province_code: str
    latitude: float
    longitude: float
    timezone: str


@dataclass(frozen=True)
class Country:
    """A market the shop sells to: names locale, phone numbering plan and cities."""

    code: str
    name: str
    locale: str
    weight: float
    # E.164 prefix; a 7-digit suffix unique per person completes a valid mobile number
    phone_prefix: str
    cities: tuple[City, ...]


def _c(name: str, prov: str, code: str, lat: float, lon: float, tz: str) -> City:
    return City(name, prov, code, lat, lon, tz)


COUNTRIES: tuple[Country, ...] = (
    Country(
        "US",
        "United States",
        "en_US",
        0.52,
        "+1",
        (
            _c("New York", "New York", "NY", 40.7128, -74.0060, "America/New_York"),
            _c("Brooklyn", "New York", "NY", 40.6782, -73.9442, "America/New_York"),
            _c("Los Angeles", "California", "CA", 34.0522, -118.2437, "America/Los_Angeles"),
            _c("San Francisco", "California", "CA", 37.7749, -122.4194, "America/Los_Angeles"),
            _c("San Diego", "California", "CA", 32.7157, -117.1611, "America/Los_Angeles"),
            _c("Chicago", "Illinois", "IL", 41.8781, -87.6298, "America/Chicago"),
            _c("Houston", "Texas", "TX", 29.7604, -95.3698, "America/Chicago"),
            _c("Austin", "Texas", "TX", 30.2672, -97.7431, "America/Chicago"),
            _c("Dallas", "Texas", "TX", 32.7767, -96.7970, "America/Chicago"),
            _c("Phoenix", "Arizona", "AZ", 33.4484, -112.0740, "America/Phoenix"),
            _c("Seattle", "Washington", "WA", 47.6062, -122.3321, "America/Los_Angeles"),
            _c("Portland", "Oregon", "OR", 45.5152, -122.6784, "America/Los_Angeles"),
            _c("Denver", "Colorado", "CO", 39.7392, -104.9903, "America/Denver"),
            _c("Miami", "Florida", "FL", 25.7617, -80.1918, "America/New_York"),
            _c("Atlanta", "Georgia", "GA", 33.7490, -84.3880, "America/New_York"),
            _c("Boston", "Massachusetts", "MA", 42.3601, -71.0589, "America/New_York"),
            _c("Philadelphia", "Pennsylvania", "PA", 39.9526, -75.1652, "America/New_York"),
            _c("Minneapolis", "Minnesota", "MN", 44.9778, -93.2650, "America/Chicago"),
            _c("Nashville", "Tennessee", "TN", 36.1627, -86.7816, "America/Chicago"),
            _c("Honolulu", "Hawaii", "HI", 21.3069, -157.8583, "Pacific/Honolulu"),
        ),
    ),
    Country(
        "GB",
        "United Kingdom",
        "en_GB",
        0.20,
        "+44",
        (
            _c("London", "England", "ENG", 51.5074, -0.1278, "Europe/London"),
            _c("Manchester", "England", "ENG", 53.4808, -2.2426, "Europe/London"),
            _c("Birmingham", "England", "ENG", 52.4862, -1.8904, "Europe/London"),
            _c("Leeds", "England", "ENG", 53.8008, -1.5491, "Europe/London"),
            _c("Bristol", "England", "ENG", 51.4545, -2.5879, "Europe/London"),
            _c("Edinburgh", "Scotland", "SCT", 55.9533, -3.1883, "Europe/London"),
            _c("Glasgow", "Scotland", "SCT", 55.8642, -4.2518, "Europe/London"),
            _c("Cardiff", "Wales", "WLS", 51.4816, -3.1791, "Europe/London"),
            _c("Belfast", "Northern Ireland", "NIR", 54.5973, -5.9301, "Europe/London"),
        ),
    ),
    Country(
        "CA",
        "Canada",
        "en_CA",
        0.05,
        "+1",
        (
            _c("Toronto", "Ontario", "ON", 43.6532, -79.3832, "America/Toronto"),
            _c("Montréal", "Quebec", "QC", 45.5017, -73.5673, "America/Toronto"),
            _c("Vancouver", "British Columbia", "BC", 49.2827, -123.1207, "America/Vancouver"),
            _c("Calgary", "Alberta", "AB", 51.0447, -114.0719, "America/Edmonton"),
        ),
    ),
    Country(
        "DE",
        "Germany",
        "de_DE",
        0.045,
        "+491512",
        (
            _c("Berlin", "Berlin", "BE", 52.5200, 13.4050, "Europe/Berlin"),
            _c("München", "Bayern", "BY", 48.1351, 11.5820, "Europe/Berlin"),
            _c("Hamburg", "Hamburg", "HH", 53.5511, 9.9937, "Europe/Berlin"),
            _c("Köln", "Nordrhein-Westfalen", "NW", 50.9375, 6.9603, "Europe/Berlin"),
        ),
    ),
    Country(
        "FR",
        "France",
        "fr_FR",
        0.04,
        "+3361",
        (
            _c("Paris", "Île-de-France", "IDF", 48.8566, 2.3522, "Europe/Paris"),
            _c("Lyon", "Auvergne-Rhône-Alpes", "ARA", 45.7640, 4.8357, "Europe/Paris"),
            _c("Marseille", "Provence-Alpes-Côte d'Azur", "PAC", 43.2965, 5.3698, "Europe/Paris"),
        ),
    ),
    Country(
        "ES",
        "Spain",
        "es_ES",
        0.025,
        "+3461",
        (
            _c("Madrid", "Madrid", "M", 40.4168, -3.7038, "Europe/Madrid"),
            _c("Barcelona", "Barcelona", "B", 41.3874, 2.1686, "Europe/Madrid"),
            _c("Sevilla", "Sevilla", "SE", 37.3891, -5.9845, "Europe/Madrid"),
        ),
    ),
    Country(
        "IT",
        "Italy",
        "it_IT",
        0.02,
        "+39347",
        (
            _c("Roma", "Roma", "RM", 41.9028, 12.4964, "Europe/Rome"),
            _c("Milano", "Milano", "MI", 45.4642, 9.1900, "Europe/Rome"),
            _c("Napoli", "Napoli", "NA", 40.8518, 14.2681, "Europe/Rome"),
        ),
    ),
    Country(
        "JP",
        "Japan",
        "ja_JP",
        0.025,
        "+81801",
        (
            _c("Tokyo", "Tokyo", "JP-13", 35.6762, 139.6503, "Asia/Tokyo"),
            _c("Osaka", "Osaka", "JP-27", 34.6937, 135.5023, "Asia/Tokyo"),
            _c("Kyoto", "Kyoto", "JP-26", 35.0116, 135.7681, "Asia/Tokyo"),
        ),
    ),
    Country(
        "CN",
        "China",
        "zh_CN",
        0.015,
        "+861381",
        (
            _c("Shanghai", "Shanghai", "SH", 31.2304, 121.4737, "Asia/Shanghai"),
            _c("Beijing", "Beijing", "BJ", 39.9042, 116.4074, "Asia/Shanghai"),
            _c("Shenzhen", "Guangdong", "GD", 22.5431, 114.0579, "Asia/Shanghai"),
        ),
    ),
    Country(
        "KR",
        "South Korea",
        "ko_KR",
        0.01,
        "+82102",
        (
            _c("Seoul", "Seoul", "KR-11", 37.5665, 126.9780, "Asia/Seoul"),
            _c("Busan", "Busan", "KR-26", 35.1796, 129.0756, "Asia/Seoul"),
        ),
    ),
    Country(
        "BR",
        "Brazil",
        "pt_BR",
        0.015,
        "+551191",
        (
            _c("São Paulo", "São Paulo", "SP", -23.5505, -46.6333, "America/Sao_Paulo"),
            _c("Rio de Janeiro", "Rio de Janeiro", "RJ", -22.9068, -43.1729, "America/Sao_Paulo"),
        ),
    ),
    Country(
        "AU",
        "Australia",
        "en_AU",
        0.03,
        "+6140",
        (
            _c("Sydney", "New South Wales", "NSW", -33.8688, 151.2093, "Australia/Sydney"),
            _c("Melbourne", "Victoria", "VIC", -37.8136, 144.9631, "Australia/Melbourne"),
            _c("Brisbane", "Queensland", "QLD", -27.4698, 153.0251, "Australia/Brisbane"),
        ),
    ),
)

# Real area codes, so numbers pass libphonenumber validation.
US_AREA_CODES = (
    "212",
    "213",
    "312",
    "415",
    "617",
    "646",
    "702",
    "713",
    "718",
    "206",
    "305",
    "404",
    "503",
    "512",
    "602",
    "303",
    "214",
    "619",
    "720",
    "917",
)
# 13 codes: one per 8M block of the 8-digit unique phone suffix.
CA_AREA_CODES = (
    "416",
    "604",
    "514",
    "403",
    "647",
    "437",
    "905",
    "613",
    "778",
    "587",
    "780",
    "438",
    "450",
)

EMAIL_DOMAINS = (
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "proton.me",
    "gmx.de",
    "web.de",
    "orange.fr",
    "libero.it",
    "yahoo.co.jp",
    "qq.com",
    "naver.com",
    "uol.com.br",
    "bigpond.com",
    "btinternet.com",
    "live.co.uk",
)
# Work addresses never appear as primary emails, so they cannot collide with another person.
WORK_DOMAINS = ("acme-corp.com", "northwind.io", "globex.net", "initech.co", "umbrella.org")

# Romanised names for scripts whose Faker locale has no romanisation (used for email local parts).
KO_ROMAN_FIRST = (
    "minjun",
    "seoyeon",
    "jiho",
    "haeun",
    "doyun",
    "jiwoo",
    "seojun",
    "sua",
    "yejun",
    "jimin",
)
KO_ROMAN_LAST = ("kim", "lee", "park", "choi", "jung", "kang", "cho", "yoon", "jang", "lim")

CUSTOMER_TAGS = (
    "vip",
    "newsletter",
    "returning",
    "wholesale",
    "b2b",
    "influencer",
    "loyalty-gold",
    "loyalty-silver",
    "retail",
    "instagram",
    "referral",
    "black-friday",
    "sample-request",
)
CUSTOMER_NOTES = (
    "Prefers delivery after 5pm.",
    "Asked about bulk pricing.",
    "Allergic to wool — check materials.",
    "Gift orders, do not include invoice.",
    "Called support about a late parcel.",
    "Repeat customer from the pop-up store.",
    "Wholesale application pending.",
    "Leave parcel with the concierge.",
)

VENDORS = (
    "Northwind Outfitters",
    "Alpine Goods",
    "Blue Harbor",
    "Casa Verde",
    "Driftwood & Co",
    "Everlane Studio",
    "Fjord Supply",
    "Golden Hour",
    "Hearth Home",
    "Indigo Thread",
    "Juniper Lane",
    "Kinfolk Craft",
    "Lumen Labs",
    "Maple & Moss",
    "Nomad Gear",
    "Oak Atelier",
    "Pacific Trail",
    "Quarry Ceramics",
    "Riverstone",
    "Saltwater Surf",
    "Terra Botanics",
    "Urban Loom",
    "Velvet Fox",
    "Wildflower Apothecary",
)
PRODUCT_TYPES = (
    ("Apparel", ("T-Shirt", "Hoodie", "Jacket", "Sweater", "Dress", "Jeans", "Socks")),
    ("Footwear", ("Sneakers", "Boots", "Sandals", "Slippers")),
    ("Accessories", ("Cap", "Scarf", "Belt", "Sunglasses", "Watch Strap")),
    ("Bags", ("Backpack", "Tote", "Duffel", "Wallet")),
    ("Home", ("Candle", "Throw Blanket", "Cushion", "Vase", "Planter")),
    ("Kitchen", ("Mug", "Pour-Over Set", "Cutting Board", "Chef Knife", "Tea Tin")),
    ("Beauty", ("Face Serum", "Lip Balm", "Hand Cream", "Shampoo Bar")),
    ("Outdoor", ("Water Bottle", "Camp Chair", "Headlamp", "Rain Shell")),
    ("Stationery", ("Notebook", "Fountain Pen", "Planner")),
    ("Gift Cards", ("Gift Card",)),
)
PRODUCT_ADJECTIVES = (
    "Classic",
    "Everyday",
    "Organic",
    "Heritage",
    "Lightweight",
    "Merino",
    "Recycled",
    "Vintage",
    "Essential",
    "Premium",
    "Canvas",
    "Linen",
    "Cedar",
    "Midnight",
    "Sunset",
)

CAMPAIGN_THEMES = (
    ("Weekly Newsletter", "This week at the shop"),
    ("New Arrivals", "Fresh drops you'll love"),
    ("Flash Sale", "24 hours only: 20% off"),
    ("Back in Stock", "It's back — grab yours"),
    ("Black Friday", "Our biggest sale of the year"),
    ("Winback", "We miss you — here's 15% off"),
    ("Loyalty Update", "Your points are waiting"),
    ("Holiday Gift Guide", "Gifts for everyone on your list"),
)
UTM_SOURCES = ("google", "facebook", "instagram", "klaviyo", "direct", "tiktok", "bing")
UTM_MEDIUMS = ("cpc", "social", "email", "organic", "referral")


def ascii_slug(text: str) -> str:
    """Lowercase ASCII letters of a name, accents folded, for email local parts."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z]", "", folded.lower())


@dataclass(frozen=True)
class LocalePool:
    """Names and street lines of one locale; *_ascii parallel lists feed email addresses."""

    first: tuple[str, ...]
    last: tuple[str, ...]
    first_ascii: tuple[str, ...]
    last_ascii: tuple[str, ...]
    streets: tuple[str, ...]
    postcodes: tuple[str, ...]


def _unique(draw, n: int) -> list[str]:
    seen: dict[str, None] = {}
    for _ in range(n * 4):
        seen.setdefault(draw(), None)
        if len(seen) >= n:
            break
    return list(seen)


def _build_locale(locale: str) -> LocalePool:
    fake = Faker(locale)
    fake.seed_instance(POOL_SEED)
    if locale == "ja_JP":
        firsts = [fake.first_name_pair() for _ in range(NAMES_PER_LOCALE)]
        lasts = [fake.last_name_pair() for _ in range(NAMES_PER_LOCALE)]
        first, first_ascii = [f[0] for f in firsts], [ascii_slug(f[2]) for f in firsts]
        last, last_ascii = [x[0] for x in lasts], [ascii_slug(x[2]) for x in lasts]
    else:
        first = _unique(fake.first_name, NAMES_PER_LOCALE)
        last = _unique(fake.last_name, NAMES_PER_LOCALE)
        if locale == "zh_CN":
            first_ascii = [ascii_slug(fake.first_romanized_name()) for _ in first]
            last_ascii = [ascii_slug(fake.last_romanized_name()) for _ in last]
        elif locale == "ko_KR":
            first_ascii = [KO_ROMAN_FIRST[i % len(KO_ROMAN_FIRST)] for i in range(len(first))]
            last_ascii = [KO_ROMAN_LAST[i % len(KO_ROMAN_LAST)] for i in range(len(last))]
        else:
            first_ascii = [ascii_slug(x) or "user" for x in first]
            last_ascii = [ascii_slug(x) or "shopper" for x in last]
    streets = [fake.street_address().replace("\n", ", ") for _ in range(STREETS_PER_LOCALE)]
    postcodes = [fake.postcode() for _ in range(STREETS_PER_LOCALE)]
    return LocalePool(
        tuple(first),
        tuple(last),
        tuple(first_ascii),
        tuple(last_ascii),
        tuple(streets),
        tuple(postcodes),
    )


@lru_cache(maxsize=1)
def locale_pools() -> tuple[LocalePool, ...]:
    """One pool per entry of COUNTRIES, in the same order (built once per process)."""
    return tuple(_build_locale(c.locale) for c in COUNTRIES)


@dataclass(frozen=True)
class Product:
    """A catalog entry; prices in cents so totals add up exactly."""

    id: int
    title: str
    vendor: str
    product_type: str
    price_cents: int


@lru_cache(maxsize=1)
def product_catalog(n: int = 300) -> tuple[Product, ...]:
    """A fixed catalog of n products spread over vendors and product types."""
    import numpy as np

    rng = np.random.default_rng(POOL_SEED)
    products: list[Product] = []
    seen: set[str] = set()
    i = 0
    while len(products) < n:
        ptype, nouns = PRODUCT_TYPES[int(rng.integers(len(PRODUCT_TYPES)))]
        noun = nouns[int(rng.integers(len(nouns)))]
        adj = PRODUCT_ADJECTIVES[int(rng.integers(len(PRODUCT_ADJECTIVES)))]
        vendor = VENDORS[int(rng.integers(len(VENDORS)))]
        title = f"{adj} {noun}"
        if title in seen:
            title = f"{adj} {noun} — {vendor.split()[0]}"
        if title in seen:
            continue
        seen.add(title)
        if ptype == "Gift Cards":
            price = int(rng.choice([2500, 5000, 10000]))
        else:
            price = int(round(float(rng.lognormal(3.4, 0.7)), 0)) * 100 - 1
            price = max(499, min(price, 49999))
        products.append(Product(8_900_000_000_000 + i * 977, title, vendor, ptype, price))
        i += 1
    return tuple(products)
