"""Klaviyo client: profiles, metrics and events through the official `klaviyo_api` SDK.

Records are handed out as the JSON:API dicts Klaviyo sends (the shape of `profiles.jsonl` and
`events.jsonl`). The SDK's own retries are switched off (it retries only 429/503/504 and
counts `max_retries` as total attempts) so `crm_pipeline.sources.http` is the one policy, and
the next-page cursor is taken from `links.next` (sources/paginate.py) because the SDK only does
that for https.
Requests declare `KLAVIYO_REVISION`, the revision of the OpenAPI description our contract tests
check against (crm_pipeline_tests/contracts/klaviyo), not whatever the SDK release defaults to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import urllib3
from klaviyo_api import KlaviyoAPI
from openapi_client.api_arg_options import USE_DICTIONARY_FOR_RESPONSE_DATA
from openapi_client.exceptions import ApiException

from crm_pipeline.ingest.bad_records import escape_invalid_utf8
from crm_pipeline.sources.errors import BadRequest, RetriableSourceError, SourceError, Timeout
from crm_pipeline.sources.http import DEFAULT_POLICY, SourceRetryPolicy, error_for_status
from crm_pipeline.sources.paginate import LinksNextPaginator, links_next_cursor, paginate
from crm_pipeline.sources.rate_limits import ApiUsage

log = logging.getLogger(__name__)

# the API revision we are tested against; move it with the description in the tests
KLAVIYO_REVISION = "2026-07-15"

# predictive analytics are slow and often 503 on big accounts: try briefly, then do without
PREDICTIVE_POLICY = SourceRetryPolicy(max_attempts=3, initial_wait=0.5, max_wait=4.0)
# after this many pages in a row had to drop predictive fields, stop asking for them
PREDICTIVE_GIVE_UP_AFTER = 3


# `page[cursor]` out of a JSON:API `links.next` URL (None on the last page)
next_cursor = links_next_cursor


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utf8_tolerant(deserialize: Callable[..., Any]) -> Callable[..., Any]:
    """The SDK decodes a page strictly: one byte that is not UTF-8 in one profile would fail the
    page, and the pull. Such bytes become JSON escapes instead, so only that record is
    quarantined (ingest/bad_records.py)."""

    def tolerant(*args: Any, **kwargs: Any) -> Any:
        response: Any = kwargs.get("response_data", args[0] if args else None)
        if isinstance(getattr(response, "data", None), bytes):
            response.data = escape_invalid_utf8(response.data)
        return deserialize(*args, **kwargs)

    return tolerant


class KlaviyoClient:
    """Reads one Klaviyo account (or the sandbox, when `api_url` is set)."""

    def __init__(
        self,
        api_key: str,
        api_url: str | None = None,
        timeout: float = 30,
        *,
        retry_policy: SourceRetryPolicy = DEFAULT_POLICY,
        predictive_policy: SourceRetryPolicy = PREDICTIVE_POLICY,
        page_size: int = 100,
        events_page_size: int = 200,
    ) -> None:
        self.api = KlaviyoAPI(
            api_key,
            max_delay=1,
            max_retries=1,  # one attempt: our policy retries
            test_host=(api_url or "").rstrip("/"),
            options={USE_DICTIONARY_FOR_RESPONSE_DATA: True},
        )
        client = self.api.api_client
        client.response_deserialize = _utf8_tolerant(client.response_deserialize)
        client.default_headers["revision"] = KLAVIYO_REVISION
        self.timeout = float(timeout)
        self.policy = retry_policy
        self.predictive_policy = predictive_policy
        self.page_size = page_size
        self.events_page_size = events_page_size
        # requests sent per rate-limit bucket, for the pull's floor metadata
        self.usage = ApiUsage()

    def _call(
        self,
        fn: Callable[..., Any],
        policy: SourceRetryPolicy | None = None,
        *,
        bucket: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One SDK call under the retry policy, with SDK errors mapped onto our tree; every
        attempt is counted against its rate-limit `bucket` (sources/rate_limits.py), if any."""

        def attempt() -> dict[str, Any]:
            if bucket:
                self.usage.klaviyo(bucket)
            try:
                return cast(dict[str, Any], fn(**kwargs, _request_timeout=self.timeout))
            except ApiException as exc:
                headers = exc.headers or {}
                body = (exc.body or "")[:300] if isinstance(exc.body, str) else exc.body
                if not exc.status:
                    raise Timeout(f"Klaviyo request failed: {exc.reason}") from exc
                err = error_for_status(
                    exc.status, f"Klaviyo HTTP {exc.status}: {body}", headers.get("Retry-After")
                )
                raise (err or SourceError(str(exc), status=exc.status)) from exc
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                raise Timeout(f"Klaviyo request failed: {exc!r}") from exc

        return (policy or self.policy).call(attempt)

    def _pages(
        self, fn: Callable[..., Any], bucket: str, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        return paginate(
            LinksNextPaginator(), lambda request: self._call(fn, bucket=bucket, **request), kwargs
        )

    def profiles(
        self, updated_since: datetime | None = None, with_predictive: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Profiles updated after `updated_since` (all when None), oldest update first.

        Without `with_predictive` (the default) pages run under the 700/min limit; asking for
        predictive_analytics puts every page under 150/min, so only `predictive_profiles` (an
        opt-in stream of its own) does. With `with_predictive`, a page whose predictive request
        keeps failing is fetched again without predictive fields: a slow model must never block
        the profile pull.
        """
        api = self.api.Profiles
        base: dict[str, Any] = {"page_size": self.page_size, "sort": "updated"}
        if updated_since is not None:
            base["filter"] = f"greater-than(updated,{_iso(updated_since)})"
        plain_fields = ["subscriptions"]
        predictive = with_predictive
        misses = 0

        def page_of(request: dict[str, Any]) -> dict[str, Any]:
            nonlocal predictive, misses
            if predictive:
                try:
                    page = self._call(
                        api.get_profiles,
                        self.predictive_policy,
                        bucket="profiles_predictive",
                        **request,
                        additional_fields_profile=plain_fields + ["predictive_analytics"],
                    )
                    misses = 0
                    return page
                except RetriableSourceError as exc:
                    misses += 1
                    log.warning("predictive analytics unavailable (%s); page without them", exc)
                    if misses >= PREDICTIVE_GIVE_UP_AFTER:
                        log.warning("giving up on predictive analytics for the rest of this pull")
                        predictive = False
            return self._call(
                api.get_profiles,
                bucket="profiles",
                **request,
                additional_fields_profile=plain_fields,
            )

        for page in paginate(LinksNextPaginator(), page_of, base):
            yield from page.get("data") or []

    def predictive_profiles(
        self, updated_since: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Profiles with Klaviyo's predictive_analytics: the slow (150/min) stream, pulled only
        when configured (`KlaviyoResource.predictive_analytics`)."""
        return self.profiles(updated_since, with_predictive=True)

    def profile_exists(self, profile_id: str) -> bool:
        """Whether Klaviyo still has this profile (get-profile; 404 means gone): a point lookup
        before a reconcile deletes it."""
        try:
            self._call(self.api.Profiles.get_profile, bucket="profiles", id=profile_id)
        except BadRequest as exc:
            if exc.status in (404, 410):
                return False
            raise
        return True

    def profiles_alive(self, profile_ids: Iterable[str]) -> set[str]:
        """The subset of these profile ids Klaviyo still has, one get-profile each."""
        return {pid for pid in profile_ids if self.profile_exists(pid)}

    def metrics(self) -> dict[str, str]:
        """Metric id -> name ("Opened Email", "Placed Order", ...)."""
        out: dict[str, str] = {}
        for page in self._pages(self.api.Metrics.get_metrics, "metrics"):
            for metric in page.get("data") or []:
                out[metric["id"]] = cast(str, (metric.get("attributes") or {}).get("name"))
        return out

    def events(
        self, since: datetime | None = None, metric_names: set[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Events after `since`, optionally only some metrics, each with `metric_name` added.

        Klaviyo filters one metric id per request, so a metric subset is one pull per metric.
        """
        names = self.metrics()
        time_filter = f"greater-than(datetime,{_iso(since)})" if since else None
        if metric_names is None:
            filters = [time_filter]
        else:
            ids = sorted(mid for mid, name in names.items() if name in metric_names)
            filters = [
                ",".join(filter(None, [time_filter, f'equals(metric_id,"{mid}")'])) for mid in ids
            ]
        for filt in filters:
            kwargs: dict[str, Any] = {"page_size": self.events_page_size, "sort": "datetime"}
            if filt:
                kwargs["filter"] = filt
            for page in self._pages(self.api.Events.get_events, "events", **kwargs):
                for event in page.get("data") or []:
                    if not isinstance(event, dict):  # quarantined by the loader
                        yield event
                        continue
                    rel = ((event.get("relationships") or {}).get("metric") or {}).get("data")
                    metric_id = (rel or {}).get("id")
                    event.setdefault("attributes", {})["metric_name"] = names.get(
                        cast(str, metric_id)
                    )
                    yield event
