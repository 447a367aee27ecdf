"""File rows (Shopify customer CSV export, Klaviyo profile CSV export, JSON Lines) as records.

Every row is turned into the source's API shape and mapped by that source's one mapping, then
tagged as the `manual` source: an import is the data team's statement about a person.
"""

from __future__ import annotations

from typing import Any

from crm_pipeline.mapping.klaviyo import map_profile
from crm_pipeline.mapping.records import CustomerRecord
from crm_pipeline.mapping.shopify import map_customer
from crm_pipeline.normalize import normalize_email, normalize_phone

SHOPIFY_CSV_MARKERS = {"First Name", "Accepts Email Marketing", "Total Spent", "Tax Exempt"}
KLAVIYO_CSV_MARKERS = {"Phone Number", "State / Region", "Email Marketing Consent", "Klaviyo ID"}


def detect_csv_format(headers: list[str]) -> str:
    names = {h.strip() for h in headers}
    if names & KLAVIYO_CSV_MARKERS:
        return "klaviyo_csv"
    if names & SHOPIFY_CSV_MARKERS or "Email" in names:
        return "shopify_csv"
    raise ValueError(
        "unrecognised CSV: expected Shopify's customer export (First Name, Last Name, Email, ...) "
        "or Klaviyo's profile export (Email, Phone Number, ...)"
    )


def _yes(value: Any) -> bool | None:
    text = str(value or "").strip().lower()
    if not text:
        return None
    return text in {"yes", "true", "1", "y", "subscribed"}


def _g(row: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = row.get(name)
        if value not in (None, ""):
            return str(value).strip()
    return None


def stable_import_id(kind: str, row: dict[str, Any], explicit: str | None) -> str | None:
    """Re-importing the same file must hit the same source records (idempotent imports)."""
    if explicit:
        return f"{kind}:{explicit.lstrip(chr(39))}"  # Shopify exports prefix ids with '
    email = normalize_email(_g(row, "Email", "email"))
    if email:
        return f"{kind}:email:{email}"
    phone = _g(row, "Phone", "Phone Number", "Default Address Phone", "phone")
    if phone and normalize_phone(phone):
        return f"{kind}:phone:{normalize_phone(phone)}"
    return None  # no identity at all: quarantined as "external_id: missing"


def map_shopify_csv_row(row: dict[str, Any]) -> CustomerRecord:
    phone = _g(row, "Phone", "Default Address Phone")
    address = {
        "company": _g(row, "Default Address Company", "Company"),
        "address1": _g(row, "Default Address Address1", "Address1"),
        "address2": _g(row, "Default Address Address2", "Address2"),
        "city": _g(row, "Default Address City", "City"),
        "province": _g(row, "Province"),
        "province_code": _g(row, "Default Address Province Code", "Province Code"),
        "country": _g(row, "Country"),
        "country_code": _g(row, "Default Address Country Code", "Country Code"),
        "zip": _g(row, "Default Address Zip", "Zip"),
        "phone": _g(row, "Default Address Phone"),
        "default": True,
    }
    external_id = stable_import_id("shopify_csv", row, _g(row, "Customer ID"))
    accepts = _yes(_g(row, "Accepts Email Marketing", "Accepts Marketing"))
    raw = {
        "id": external_id,
        "email": _g(row, "Email"),
        "first_name": _g(row, "First Name"),
        "last_name": _g(row, "Last Name"),
        "phone": phone,
        "tags": _g(row, "Tags"),
        "note": _g(row, "Note"),
        "tax_exempt": _yes(_g(row, "Tax Exempt")),
        "total_spent": _g(row, "Total Spent"),
        "orders_count": _g(row, "Total Orders"),
        "addresses": [address] if any(v for k, v in address.items() if k != "default") else [],
    }
    if accepts is not None:
        raw["email_marketing_consent"] = {"state": "subscribed" if accepts else "not_subscribed"}
    sms = _yes(_g(row, "Accepts SMS Marketing"))
    if sms is not None:
        raw["sms_marketing_consent"] = {"state": "subscribed" if sms else "not_subscribed"}
    if raw["addresses"]:
        raw["addresses"][0]["id"] = f"{external_id}:address"
        raw["default_address"] = raw["addresses"][0]
    return _as_manual(map_customer(raw, source="manual"), external_id, row)


def map_klaviyo_csv_row(row: dict[str, Any]) -> CustomerRecord:
    external_id = stable_import_id("klaviyo_csv", row, _g(row, "Klaviyo ID", "Profile ID"))
    consent = (_g(row, "Email Marketing Consent") or "").upper() or None
    raw = {
        "type": "profile",
        "id": external_id,
        "attributes": {
            "email": _g(row, "Email"),
            "phone_number": _g(row, "Phone Number"),
            "first_name": _g(row, "First Name"),
            "last_name": _g(row, "Last Name"),
            "organization": _g(row, "Organization"),
            "title": _g(row, "Title"),
            "external_id": _g(row, "External ID"),
            "created": _g(row, "Created", "Date Added"),
            "updated": _g(row, "Last Updated", "Updated"),
            "location": {
                "address1": _g(row, "Address"),
                "address2": _g(row, "Address 2"),
                "city": _g(row, "City"),
                "region": _g(row, "State / Region"),
                "country": _g(row, "Country"),
                "zip": _g(row, "Zip Code"),
                "latitude": _g(row, "Latitude"),
                "longitude": _g(row, "Longitude"),
                "timezone": _g(row, "Timezone"),
            },
            "subscriptions": {"email": {"marketing": {"consent": consent}}} if consent else None,
        },
    }
    return _as_manual(map_profile(raw), external_id, row)


def map_jsonl_row(row: dict[str, Any]) -> CustomerRecord:
    """A Klaviyo JSON:API profile, a Shopify REST customer, or a flat {email, first_name, ...}."""
    if row.get("type") == "profile":
        ext = stable_import_id("jsonl", row.get("attributes") or {}, row.get("id"))
        return _as_manual(map_profile({**row, "id": ext}), ext, row)
    flat = dict(row)
    ext = stable_import_id(
        "jsonl",
        {"Email": flat.get("email"), "Phone": flat.get("phone")},
        str(flat["id"]) if flat.get("id") not in (None, "") else None,
    )
    flat["id"] = ext
    if "accepts_email_marketing" in flat and "email_marketing_consent" not in flat:
        accepted = bool(flat.pop("accepts_email_marketing"))
        flat["email_marketing_consent"] = {"state": "subscribed" if accepted else "not_subscribed"}
    return _as_manual(map_customer(flat, source="manual"), ext, row)


def _as_manual(
    record: CustomerRecord, external_id: str | None, row: dict[str, Any]
) -> CustomerRecord:
    record.source = "manual"
    record.external_id = external_id
    record.link_shopify_id = None
    record.raw = row
    return record
