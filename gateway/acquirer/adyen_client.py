"""The asyncio edge of the Adyen acquirer: sends what ``adyen_requests`` builds, over aiohttp.

The API key is read from its secret reference when the client is made and lives only in the
request header; it is never logged or put into an error. A failure after the request may have
left is ``AcquirerUnreachable(ambiguous=True)``: sending again with the same command key (the
same Idempotency-Key) is what the caller does, and Adyen applies it once.
"""

from __future__ import annotations

import logging

import aiohttp

from drivers.money import Money
from gateway.acquirer import adyen_requests
from gateway.acquirer.port import Modification, Received
from gateway.errors import AcquirerUnreachable
from gateway.settings import AcquirerSettings

_LOGGER = logging.getLogger(__name__)
ANSWER_LIMIT = 64 * 1024  # bytes of an answer read; Adyen's are a few hundred
_HINTS = {
    401: "check the API key",
    403: "check the API key's roles and the merchant account",
    404: "check base_url",
}


class AdyenAcquirer:
    """Adyen's Checkout API modifications (the ``adyen`` acquirer profile)."""

    def __init__(
        self, name: str, settings: AcquirerSettings, session: aiohttp.ClientSession
    ) -> None:
        self.name = name
        self._base = settings.base_url.rstrip("/")
        self._merchant = settings.merchant_account
        self._api_key = settings.api_key.reveal()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._session = session

    async def update_amount(
        self, command_key: str, *, payment_reference: str, amount: Money
    ) -> Received:
        return await self.send(
            Modification(
                command_key, "amount_update", payment_reference=payment_reference, amount=amount
            )
        )

    async def capture(
        self, command_key: str, *, payment_reference: str, amount: Money, authorised: Money
    ) -> Received:
        return await self.send(
            Modification(
                command_key,
                "capture",
                payment_reference=payment_reference,
                amount=amount,
                authorised=authorised,
            )
        )

    async def cancel(self, command_key: str, *, payment_reference: str) -> Received:
        return await self.send(
            Modification(command_key, "cancel", payment_reference=payment_reference)
        )

    async def cancel_by_reference(self, command_key: str, *, merchant_reference: str) -> Received:
        return await self.send(
            Modification(command_key, "cancel_by_reference", merchant_reference=merchant_reference)
        )

    async def refund(self, command_key: str, *, payment_reference: str, amount: Money) -> Received:
        return await self.send(
            Modification(command_key, "refund", payment_reference=payment_reference, amount=amount)
        )

    async def send(self, modification: Modification) -> Received:
        request = adyen_requests.build(modification, merchant_account=self._merchant)
        headers = {**request.headers, "X-API-Key": self._api_key}
        url = self._base + request.path
        try:
            async with self._session.request(
                request.method, url, data=request.body, headers=headers, timeout=self._timeout
            ) as response:
                body = await response.content.read(ANSWER_LIMIT)
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise AcquirerUnreachable(
                f"{self._base}: cannot connect ({exc.os_error.strerror or exc})", ambiguous=False
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AcquirerUnreachable(
                f"{self._base}: no answer ({type(exc).__name__}); the modification may have "
                "been applied: send it again with the same command key",
                ambiguous=True,
            ) from None
        _LOGGER.info(
            "acquirer.sent",
            extra={
                "acquirer": self.name,
                "kind": modification.kind,
                "command_key": modification.command_key,
                "http_status": status,
            },
        )
        if adyen_requests.try_again(status):
            raise AcquirerUnreachable(
                f"{self._base}: HTTP {status} ({_HINTS.get(status, 'try again later')}); kept "
                "to be sent again under the same command key",
                ambiguous=status >= 500,
            )
        return adyen_requests.parse_answer(modification.command_key, status, body)
