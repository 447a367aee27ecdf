"""What a valid admin action is: one pydantic model per action, shared by receiver and processor.

The receiver validates every POST /webhooks/admin body with `parse_admin_action` and answers
422 (storing nothing) when it fails; the processor parses the stored payload with the same
function before applying it, so the edge and the effect can never disagree about what an action
may carry. Unknown fields are refused (a typo in a field name must not be accepted and silently
ignored). Imports only pydantic and `normalize`, so the receiver stays light.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from crm_pipeline.normalize import parse_timestamp, split_tags
from crm_pipeline.webhooks.subjects import MAX_IDENT_LENGTH

SEGMENT_TYPES = ("behavioral", "demographic", "value", "custom")
ACTIVITY_TYPES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout_started",
    "purchase",
    "email_open",
    "email_click",
    "email_unsubscribe",
    "sms_click",
    "active_on_site",
    "note",
    "other",
)
CUSTOMER_TYPES = ("guest", "registered", "wholesale", "affiliate")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _iso_time(value: str) -> str:
    # kept as text: the processor reads it with the same parse_timestamp
    if parse_timestamp(value) is None:
        raise ValueError("must be an ISO 8601 date-time")
    return value


Ident = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_IDENT_LENGTH),
    AfterValidator(_no_nul),
]
IsoTime = Annotated[str, AfterValidator(_iso_time)]
Tags = list[str] | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerFields(_Strict):
    """The profile staff enter; only the fields given are patched onto the manual record."""

    admin_id: Ident | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    note: str | None = None
    customer_type: Literal[CUSTOMER_TYPES] | None = None  # type: ignore[valid-type]
    accepts_email_marketing: bool | None = None
    accepts_sms_marketing: bool | None = None
    created_at: IsoTime | None = None
    tags: Tags = None
    addresses: list[dict[str, Any]] | None = None


class _Action(_Strict):
    """Envelope of every action: its name and id (both signed), when and by whom."""

    action: str
    action_id: Ident
    occurred_at: IsoTime | None = None
    actor: str | None = None


class AboutCustomer(_Action):
    """The customer is named by CRM id (merges followed), admin app id, Shopify id or email."""

    customer_id: Ident | None = None
    admin_id: Ident | None = None
    shopify_customer_id: Ident | int | None = None
    email: str | None = None

    @model_validator(mode="after")
    def _names_a_customer(self) -> AboutCustomer:
        if not self.names_customer():
            raise ValueError(
                "name the customer: customer_id, admin_id, shopify_customer_id or email"
            )
        return self

    def names_customer(self) -> bool:
        return bool(self.customer_id or self.admin_id or self.shopify_customer_id or self.email)


class CustomerCreate(AboutCustomer):
    action: Literal["customer.create"]
    customer: CustomerFields

    def names_customer(self) -> bool:  # a new customer is named by the admin app's id
        return bool(self.customer_id or self.admin_id or self.customer.admin_id)


class CustomerUpdate(AboutCustomer):
    action: Literal["customer.update"]
    customer: CustomerFields

    def names_customer(self) -> bool:
        return super().names_customer() or bool(self.customer.admin_id)


class CustomerNote(AboutCustomer):
    action: Literal["customer.note"]
    internal_notes: str | None  # required; null clears the notes


class CustomerTags(AboutCustomer):
    action: Literal["customer.tags"]
    add: Tags = None
    remove: Tags = None

    @model_validator(mode="after")
    def _changes_something(self) -> CustomerTags:
        if not split_tags(self.add) and not split_tags(self.remove):
            raise ValueError("customer.tags needs add and/or remove")
        return self


class CustomerBlock(AboutCustomer):
    action: Literal["customer.block"]
    reason: str | None = None


class CustomerUnblock(AboutCustomer):
    action: Literal["customer.unblock"]


class CustomerDelete(AboutCustomer):
    action: Literal["customer.delete"]


class SegmentAdd(AboutCustomer):
    action: Literal["segment.add"]
    segment_name: Ident
    segment_type: Literal[SEGMENT_TYPES] | None = None  # type: ignore[valid-type]
    expires_at: IsoTime | None = None


class SegmentRemove(AboutCustomer):
    action: Literal["segment.remove"]
    segment_name: Ident
    segment_type: Literal[SEGMENT_TYPES] | None = None  # type: ignore[valid-type]


class ActivityRecord(AboutCustomer):
    action: Literal["activity.record"]
    activity_type: Literal[ACTIVITY_TYPES]  # type: ignore[valid-type]
    activity_id: Ident | None = None
    activity_at: IsoTime | None = None
    properties: dict[str, Any] | None = None
    session_id: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None


ACTION_MODELS: tuple[type[_Action], ...] = (
    CustomerCreate,
    CustomerUpdate,
    CustomerNote,
    CustomerTags,
    CustomerBlock,
    CustomerUnblock,
    CustomerDelete,
    SegmentAdd,
    SegmentRemove,
    ActivityRecord,
)
# every action name, e.g. "customer.note"
ADMIN_ACTIONS: tuple[str, ...] = tuple(
    get_args(model.model_fields["action"].annotation)[0] for model in ACTION_MODELS
)
AdminAction = Annotated[Union[ACTION_MODELS], Field(discriminator="action")]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AdminAction)


class InvalidAdminAction(ValueError):
    """The body is not a valid admin action; `errors` name the fields (never their values)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)
        )


def parse_admin_action(data: Any) -> _Action:
    """The typed action of a decoded JSON body, or InvalidAdminAction with the field errors."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        # no `input`: the rejected values may be a person's email or phone
        errors = [
            {
                "loc": ["action"] if e["type"].startswith("union_tag") else list(e["loc"]),
                "msg": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise InvalidAdminAction(errors) from exc
