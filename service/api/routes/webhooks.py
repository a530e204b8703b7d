"""Admin endpoints of the webhooks (`jobs.webhooks`): subscriptions to every job's events, their delivery logs, and
a manual redelivery."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response, status

from jobs.contracts import WebhookRequest
from jobs.webhooks.model import Subscription
from jobs.webhooks.store import WebhookStore
from jobs.webhooks.subscriptions import subscribe
from service.api.deps import JobsDep, SettingsDep, require_admin
from service.api.schemas import DeliveryList, DeliveryView, WebhookList, WebhookView

router = APIRouter(prefix="/v1/admin/webhooks", tags=["admin"], dependencies=[Depends(require_admin)])


def _deployment(webhooks: WebhookStore, webhook_id: str) -> Subscription:
    found = webhooks.subscription(webhook_id)
    if found is None or found.job_id is not None:  # a request's own subscription is not the admin's to manage
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"webhook {webhook_id!r} does not exist")
    return found


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookView)
def create_webhook(body: WebhookRequest, jobs: JobsDep, settings: SettingsDep, response: Response) -> WebhookView:
    """Subscribe a URL to events of every job. The answer shows the subscription's secret (`whsec_...`) this once:
    each delivery's `webhook-signature` is made with it (Standard Webhooks)."""
    subscription = subscribe(jobs.webhooks, settings, body.url, body.events)
    response.headers["Location"] = f"/v1/admin/webhooks/{subscription.id}"
    return WebhookView.of(subscription, with_secret=True)


@router.get("", response_model=WebhookList)
def list_webhooks(jobs: JobsDep) -> WebhookList:
    return WebhookList(items=[WebhookView.of(s) for s in jobs.webhooks.subscriptions()])


@router.get("/{webhook_id}", response_model=WebhookView)
def get_webhook(webhook_id: str, jobs: JobsDep) -> WebhookView:
    return WebhookView.of(_deployment(jobs.webhooks, webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_webhook(webhook_id: str, jobs: JobsDep) -> Response:
    """Unsubscribe; deliveries still pending fail at their next attempt, and the delivery log stays readable."""
    _deployment(jobs.webhooks, webhook_id)
    jobs.webhooks.unsubscribe(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
def list_deliveries(webhook_id: str, jobs: JobsDep) -> DeliveryList:
    """The subscription's deliveries, newest first: each with its attempts (time, status code, error), its status
    (pending, delivered, failed) and when it is tried next."""
    _deployment(jobs.webhooks, webhook_id)
    return DeliveryList(items=[DeliveryView.of(d) for d in jobs.webhooks.deliveries(webhook_id)])


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryView,
)
def redeliver(webhook_id: str, delivery_id: str, jobs: JobsDep) -> DeliveryView:
    """Send a delivery again now, with the same webhook-id and payload, and the whole retry schedule ahead of it."""
    _deployment(jobs.webhooks, webhook_id)
    again = jobs.webhooks.redeliver(webhook_id, delivery_id)
    if again is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"webhook {webhook_id!r} has no delivery {delivery_id!r}")
    return DeliveryView.of(again)
