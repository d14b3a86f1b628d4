"""``evpay simulate terminal``: the PT simulator, standalone, on TCP or a pty."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli import nexo_poi_cmd
from gateway.cli.lazy_choices import choices_from

if TYPE_CHECKING:
    from drivers.sim.terminal import SimTerminal
    from firmware_bridge.sim import ChargerSimulator
    from gateway.ocpi.cpo_sim import CpoSimulator


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser("simulate", help="run simulators (terminal, charger, cpo, acquirer)")
    sub = sim.add_subparsers(dest="what", required=True, metavar="WHAT")
    term = sub.add_parser(
        "terminal", help="a ZVT terminal on TCP or a pty, or a nexo POI on loopback HTTP(S)"
    )
    where = term.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", help="tcp://127.0.0.1:20007 (zvt), http://127.0.0.1:PORT (nexo)")
    where.add_argument("--pty", action="store_true", help="create a pty and print its device path")
    term.add_argument(
        "--outcomes",
        default="",
        help="comma list used in order: approve, decline, partial:<minor>, card_removed, timeout, "
        "busy, "
        "power_loss, disconnect",
    )
    term.add_argument("--default-outcome", default="approve")
    term.add_argument(
        "--card-wait", type=float, default=1.0, help="seconds the simulated customer needs"
    )
    term.add_argument(
        "--password-env", default="EVPAY_ZVT_PASSWORD", help="env var with the PT password"
    )
    term.add_argument(
        "--state", type=Path, help="keep the turnover store in this JSON file across restarts"
    )
    term.add_argument(
        "--echo",
        choices=("booked", "reversed"),
        default="booked",
        help="which amount a partial reversal's result carries (terminals differ)",
    )
    term.add_argument(
        "--extensions",
        choices=("none", "new_receipt", "same_receipt"),
        default="none",
        help="how a reservation extension (top-up) is answered",
    )
    term.add_argument(
        "--please-wait",
        type=int,
        default=0,
        metavar="N",
        help="identical 'please wait' statuses per payment (real PTs repeat them)",
    )
    nexo_poi_cmd.add_arguments(term)
    term.set_defaults(handler=_terminal)
    charger = sub.add_parser(
        "charger", help="charger firmware on an MQTT broker (our topic contract v1)"
    )
    charger.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    charger.add_argument(
        "--prefix", default="evpay/v1", help="topic prefix (as [charger] topic_prefix)"
    )
    charger.add_argument(
        "--evse", action="append", required=True, help="an EVSE id to play (repeatable)"
    )
    charger.add_argument("--energy-wh", type=int, default=8000, help="what each EV takes")
    charger.add_argument("--power-kw", type=float, default=11.0, help="charging power")
    charger.add_argument("--interval", type=float, default=1.0, help="seconds between meter values")
    charger.add_argument("--plug", action="store_true", help="plug an EV in at every EVSE at start")
    charger.add_argument("--target-kwh", help="the driver's declared energy, sent with the plug-in")
    charger.add_argument(
        "--username", help="the charger's broker user (its topic tree); default: charger"
    )
    charger.add_argument(
        "--password-env",
        default="EVPAY_CHARGER_PASSWORD",
        help="environment variable holding its password (never on the command line)",
    )
    charger.set_defaults(handler=_charger)
    cpo = sub.add_parser("cpo", help="the embedded OCPI 2.3.0 CPO (payments receiver, credentials)")
    cpo.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT")
    cpo.add_argument(
        "--token-a-env", default="EVPAY_CPO_TOKEN_A", help="env var with the registration token A"
    )
    cpo.add_argument(
        "--accept-token-env",
        default="",
        help="env var with a token C to accept without a handshake",
    )
    cpo.add_argument(
        "--no-callback", action="store_true", help="do not call the PTP back during registration"
    )
    quirk = cpo.add_argument(
        "--quirk", action="append", default=[], help="deviate as some real CPOs do (repeatable)"
    )
    choices_from(quirk, "gateway.ocpi.cpo_sim:QUIRKS")
    cpo.set_defaults(handler=_cpo)
    acq = sub.add_parser("acquirer", help="Adyen's Checkout modifications and signed webhooks")
    acq.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT")
    acq.add_argument("--webhook", required=True, help="the gateway's notifications URL")
    choices_from(
        acq.add_argument("--variant", action="append", default=[]), "gateway.acquirer.sim:VARIANTS"
    )
    acq.add_argument("--merchant-account", default="EVPayTest")
    acq.add_argument("--webhook-user", default="adyen")
    acq.add_argument(
        "--secrets-env-prefix",
        default="EVPAY_ADYEN_",
        help="env vars PREFIX{API_KEY,HMAC_KEY,WEBHOOK_PASSWORD}",
    )
    acq.set_defaults(handler=_acquirer)


def _terminal(args: argparse.Namespace) -> int:
    from drivers.sim.terminal import SimConfig, SimTerminal
    from gateway.runtime import logs

    logs.configure("info")
    if args.protocol == "nexo":
        return nexo_poi_cmd.run(args)
    config = SimConfig(
        password=os.environ.get(args.password_env, "000000"),
        outcomes=deque(o for o in args.outcomes.split(",") if o),
        default_outcome=args.default_outcome,
        card_wait_s=args.card_wait,
        state_path=args.state,
        echo=args.echo,
        extensions=args.extensions,
        please_wait=args.please_wait,
    )
    return asyncio.run(_serve(SimTerminal(config), args))


async def _serve(sim: SimTerminal, args: argparse.Namespace) -> int:
    from drivers.sim.ports import PtyPort, serve_tcp
    from drivers.transport.url import TcpUrl, parse_device_url

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.pty:
        port = PtyPort()
        print(
            f"simulated terminal on pty {port.slave_path} (use serial://{port.slave_path})",
            flush=True,
        )
        serving = asyncio.create_task(sim.serve_line(port))
        await stop.wait()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await port.close()
        return 0
    url = parse_device_url(args.listen)
    if not isinstance(url, TcpUrl):
        print("--listen takes tcp://HOST:PORT")
        return 2
    server = await serve_tcp(url.host, url.port, lambda p: sim.serve(p, serial=False))
    print(
        f"simulated terminal listening on tcp://{url.host}:{server.sockets[0].getsockname()[1]}",
        flush=True,
    )
    await stop.wait()
    server.close()
    await server.wait_closed()
    return 0


def _charger(args: argparse.Namespace) -> int:
    from firmware_bridge.link import BrokerSettings
    from firmware_bridge.sim import ChargerSimulator, Plan
    from gateway.runtime import logs

    logs.configure("info")
    step = max(
        1, int(args.power_kw * 1000 * args.interval / 3600)
    )  # Wh per meter interval at that power
    plan = Plan(energy_wh=args.energy_wh, step_wh=step, interval_s=args.interval)
    broker = BrokerSettings(
        url=args.broker,
        prefix=args.prefix,
        username=args.username,
        password=os.environ.get(args.password_env),
    )
    sim = ChargerSimulator(broker, args.evse, plan)
    return asyncio.run(_serve_charger(sim, args))


async def _serve_charger(sim: ChargerSimulator, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(sim.run(stop))
    await sim.ready.wait()
    print(
        f"charger simulator: {', '.join(args.evse)} on {args.broker} (prefix {args.prefix})",
        flush=True,
    )
    if args.plug:
        for evse in args.evse:
            await sim.plug(evse, args.target_kwh)
    await task
    return 0


def _acquirer(args: argparse.Namespace) -> int:
    from gateway.acquirer.sim import SimState
    from gateway.acquirer.sim import serve as serve_acquirer
    from gateway.runtime import logs

    logs.configure("warning")
    host, _, port = args.listen.rpartition(":")
    env = args.secrets_env_prefix
    state = SimState(
        api_key=os.environ.get(f"{env}API_KEY", "sim-api-key"),
        hmac_key=os.environ.get(f"{env}HMAC_KEY", "00" * 32),
        merchant_account=args.merchant_account,
        webhook_url=args.webhook,
        webhook_user=args.webhook_user,
        webhook_password=os.environ.get(f"{env}WEBHOOK_PASSWORD", "sim-webhook-password"),
        variants=set(args.variant),
    )

    async def run() -> int:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await serve_acquirer(state, host or "127.0.0.1", int(port or 0), stop)
        return 0

    return asyncio.run(run())


def _cpo(args: argparse.Namespace) -> int:
    from gateway.ocpi.cpo_sim import CpoSimulator, CpoState
    from gateway.runtime import logs

    logs.configure("warning")
    host, _, port = args.listen.rpartition(":")
    state = CpoState()
    state.token_a = os.environ.get(args.token_a_env, state.token_a)
    if args.accept_token_env and os.environ.get(args.accept_token_env):
        state.tokens.add(os.environ[args.accept_token_env])
    state.callback = not args.no_callback
    state.quirks = set(args.quirk)
    return asyncio.run(_serve_cpo(CpoSimulator(state), host or "127.0.0.1", int(port or 0)))


async def _serve_cpo(cpo: CpoSimulator, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await cpo.start(host, port)
    print(f"embedded CPO: versions {cpo.versions_url}", flush=True)
    await stop.wait()
    print(
        f"embedded CPO: received {len(cpo.state.facs)} FACs ({len(cpo.state.fac_posts)} POSTs)",
        flush=True,
    )
    await cpo.stop()
    return 0
