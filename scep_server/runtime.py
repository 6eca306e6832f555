"""Wiring: turn a ServerConfig into the live objects one process serves with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.generations import Generation, load_generations, watched_files
from scep_server.ca.live import LiveAuthority, follow
from scep_server.ca.ocsp import IssuerHashes
from scep_server.ca.policy import IssuancePolicy
from scep_server.ca.responder import DelegatedResponder, responder_policy
from scep_server.challenge import Resources, build_validator, defers_when_unavailable, needs_intune
from scep_server.challenge.intune import IntuneLink
from scep_server.config import ProfileConfig, ServerConfig
from scep_server.config.model import DeviceLifecycle
from scep_server.intune.client import IntuneClient
from scep_server.intune.graph_devices import GraphDevices
from scep_server.intune.transport import IntuneTransport
from scep_server.jobs import tasks as jobs
from scep_server.jobs.locks import INTUNE_REVOCATION_ROUND, LockFactory
from scep_server.jobs.tasks import DeferredValidations, RevocationRounds
from scep_server.jobs.worker import BackgroundWorker, Task
from scep_server.scep.message import CONTENT_KEY_LEDGER, DecodeOptions
from scep_server.service.certificates import CertificateQueries
from scep_server.service.device_lifecycle import DeviceLifecycleSync, lifecycle_policies
from scep_server.service.enrollment import EnrollmentService
from scep_server.service.enrollments import EnrollmentQueries
from scep_server.service.intune_outbox import NotificationOutbox
from scep_server.service.intune_sync import RevocationSync
from scep_server.service.issuance import IssuanceService
from scep_server.service.issuers import Issuers, IssuerServices, OcspRouter
from scep_server.service.ocsp import OcspResponder
from scep_server.service.operations import Operations
from scep_server.service.profile import GetCertScope, Profile
from scep_server.service.publishing import CrlCache, RevocationWatch
from scep_server.service.ra_renewal import RaRenewal
from scep_server.service.readiness import Readiness
from scep_server.service.reissue_poll import ReissuePoll, SharedRounds
from scep_server.service.reports import Reports
from scep_server.service.revocation import RevocationService
from scep_server.store import Store
from scep_server.store.otp import OtpRepository


@dataclass(frozen=True, slots=True)
class Runtime:
    config: ServerConfig
    authority: LiveAuthority
    store: Store
    profiles: dict[str, Profile]
    issuers: Issuers
    service: EnrollmentService
    background: BackgroundWorker
    ocsp: OcspRouter
    revocations: RevocationService
    certificates: CertificateQueries
    readiness: Readiness
    reports: Reports
    operations: Operations
    enrollments: EnrollmentQueries
    device_lifecycle: DeviceLifecycleSync | None = None  # the sync's job, when a profile has it on

    @property
    def ca(self) -> CertificateAuthority:
        """The CA with its current RA keyring (``ca rotate-ra`` and the renewal job change it on disk)."""
        return self.authority.current()

    @property
    def crls(self) -> CrlCache:
        """The issuing generation's CRL (each generation has its own: ``issuers``)."""
        return self.issuers.active().crls

    def close(self) -> None:
        self.background.stop()
        self.readiness.close()
        self.store.close()


def ca_passphrase(config: ServerConfig) -> bytes | None:
    value = config.ca.key_passphrase.resolve()
    return value.encode("utf-8") if value else None


def crl_url(config: ServerConfig) -> str | None:
    return f"{config.public_url.rstrip('/')}/crl/{config.ca.name}.crl" if config.public_url else None


def ocsp_url(config: ServerConfig) -> str | None:
    return f"{config.public_url.rstrip('/')}/ocsp" if config.public_url else None


def ca_issuers_url(config: ServerConfig) -> str | None:
    return f"{config.public_url.rstrip('/')}/ca/{config.ca.name}.crt" if config.public_url else None


def ca_configuration(config: ServerConfig) -> str:
    """NDES-style ``host\\CA name``, reported to Intune as caConfiguration."""
    host = urlsplit(config.public_url).hostname if config.public_url else None
    return f"{host or 'scep-server'}\\{config.ca.name}"


def build_profile(config: ServerConfig, profile: ProfileConfig, resources: Resources) -> Profile:
    policy = IssuancePolicy.from_profile(
        profile, crl_url=crl_url(config), ca_issuers_url=ca_issuers_url(config), ocsp_url=ocsp_url(config)
    )
    decode = DecodeOptions(
        allow_des=profile.allow_des, allow_3des=profile.allow_3des, allow_sha1=profile.allow_sha1,
        key_ledger=CONTENT_KEY_LEDGER,
    )
    return Profile(
        profile.name,
        build_validator(profile, resources),
        policy,
        decode,
        profile.allow_renewal,
        defer_when_unavailable=defers_when_unavailable(profile.challenge),
        pending_timeout=timedelta(minutes=profile.challenge.pending_timeout_minutes),
        get_cert=GetCertScope(profile.get_cert),
        require_signer_subject=profile.require_signer_subject,
        device_id=profile.device_id,
    )


def build_runtime(config: ServerConfig) -> Runtime:
    """Load the CA, open (and migrate) the store, build every profile. Raises ConfigError/CAError."""
    authority = live_authority(config)
    store = Store.open(config.effective_database_url)
    try:
        store.migrate()
        return _assemble(config, authority, store)
    except Exception:
        store.close()
        raise


def _assemble(config: ServerConfig, authority: LiveAuthority, store: Store) -> Runtime:
    ca = authority.current()
    worker_tasks: list[Task] = []
    background = BackgroundWorker(worker_tasks, locks=LockFactory(store))
    watch = RevocationWatch(store, holds=any(p.device_lifecycle is DeviceLifecycle.OCSP_ONLY for p in config.profiles))
    issuers = Issuers(authority, lambda generation: _issuer_services(config, generation, store, watch, background))
    worker_tasks.append(jobs.crl_publishing(issuers.publish_due))
    issuers.active().responder.current()  # create/renew at startup; fails early if the CA dir is read-only
    worker_tasks.append(jobs.ocsp_responder_renewal(issuers.renew_responders))
    ocsp = OcspRouter(issuers)
    revocations = RevocationService(
        store, issuer=ca.issuer_name, caches=(issuers,),
        issuers=lambda: [generation.ca.issuer_name for generation in authority.generations().all()],
    )
    resources = _intune_services(config, store, background, worker_tasks, revocations)
    resources = Resources((*resources.items, OtpRepository(store.engine)))  # the otp validators' ledger
    profiles = {p.name: build_profile(config, p, resources) for p in config.profiles}
    lease = timedelta(seconds=config.transaction_lease_seconds)
    issuance = IssuanceService(authority, store, revocations)
    reissue_poll, lifecycle = _device_services(config, store, revocations, issuers, worker_tasks)
    service = EnrollmentService(authority, store, profiles, issuers, issuance, claim_lease=lease,
                                reissue_poll=reissue_poll)
    worker_tasks.append(jobs.undelivered_certificates(service.withdraw_abandoned))
    if any(p.defer_when_unavailable for p in profiles.values()):
        worker_tasks.append(jobs.deferred_validations(DeferredValidations(store, service.issuance, profiles)))
    certificates = CertificateQueries(store, revocations)  # any generation's: a rollover keeps the old ones
    renewal = RaRenewal(authority, config.ca, ca_passphrase(config), store=store)
    worker_tasks.append(jobs.ra_renewal(renewal.renew_due))
    readiness = Readiness.of_server(config, authority, store, issuers)
    readiness.radar.survey(local_only=True)  # the gauges set and a near expiry logged at start, without Graph
    worker_tasks.append(jobs.credential_expiry(readiness.radar.survey))
    return Runtime(
        config, authority, store, profiles, issuers, service, background, ocsp, revocations, certificates, readiness,
        reports=Reports(store), operations=Operations(store, readiness.radar),
        enrollments=EnrollmentQueries(store), device_lifecycle=lifecycle,
    )


def live_authority(config: ServerConfig) -> LiveAuthority:
    """The CA generations of ``config.ca_dir``, loaded and followed (RA rotations, rollovers by any
    process). Raises CAError/ConfigError when the issuing one does not load."""
    passphrase = ca_passphrase(config)
    return follow(
        lambda: load_generations(config.ca_dir, config.ca, passphrase),
        lambda: tuple(watched_files(config.ca_dir, config.ca)),
    )


def _issuer_services(
    config: ServerConfig, generation: Generation, store: Store, watch: RevocationWatch, background: BackgroundWorker
) -> IssuerServices:
    """The CRL and the OCSP responder of one CA generation (its delegated responder in its directory)."""
    ca = generation.ca
    validity = timedelta(hours=config.ca.crl_validity_hours)
    crls = CrlCache(
        ca, store, validity=validity, refresh=min(validity / 4, timedelta(hours=1)), watch=watch,
        wake=background.wake.set,
    )
    policy = responder_policy(config.ca.ocsp_subject, config.ca.ocsp_validity_days)
    responder = DelegatedResponder(generation.directory, ca, ca_passphrase(config), policy, keys=config.ca.keys)
    ocsp = OcspResponder(ca, store, responder, watch,
                         validity=timedelta(minutes=config.ca.ocsp_response_validity_minutes))
    return IssuerServices(generation, crls, ocsp, responder, IssuerHashes(ca.ca_cert))


def _intune_services(
    config: ServerConfig, store: Store, background: BackgroundWorker, tasks: list[Task],
    revocations: RevocationService,
) -> Resources:
    """The Intune client, its notification outbox and the revocation sync, when Intune is configured;
    what the validators that call Intune share."""
    uses_intune = any(needs_intune(p.challenge) for p in config.profiles)
    if not uses_intune and not config.intune.configured:
        return Resources()
    client = IntuneClient(config.intune)
    outbox = NotificationOutbox(store, client, wake=background.wake)
    tasks.append(jobs.intune_outbox(outbox.deliver_due))
    rounds = revocation_sync(config, store, client, revocations)
    tasks.append(jobs.intune_revocation_sync(rounds, every=config.intune.revocation_poll_seconds))
    link = IntuneLink(client, outbox, ca_configuration(config), journal=store)
    return Resources((link,)) if uses_intune else Resources()


def _device_services(
    config: ServerConfig, store: Store, revocations: RevocationService, issuers: Issuers, tasks: list[Task]
) -> tuple[ReissuePoll | None, DeviceLifecycleSync | None]:
    """The revocation poll before a reissue (Intune-validated profiles) and the device lifecycle sync's job
    (profiles with ``device_lifecycle`` on), each when it applies; they share one Graph/Intune transport."""
    validated = [p.name for p in config.profiles if needs_intune(p.challenge)]
    policies = lifecycle_policies(config.profiles)
    wait = config.intune.revocation_poll_before_reissue_seconds
    if not config.intune.configured or not (policies or (validated and wait > 0)):
        return None, None
    transport = IntuneTransport(config.intune)
    poll = None
    if validated and wait > 0:
        rounds = revocation_sync(config, store, IntuneClient(config.intune, transport=transport), revocations)
        poll = ReissuePoll(store.devices, SharedRounds(lambda: rounds.run_when_free(wait)), wait=wait,
                           profiles=validated, device_ids={p.name: p.device_id for p in config.profiles})
    lifecycle = None
    if policies:
        lifecycle = DeviceLifecycleSync(store, GraphDevices(transport), revocations, policies, caches=(issuers,),
                                        interval=config.intune.device_lifecycle_interval_seconds,
                                        max_revocations=config.intune.device_lifecycle_max_revocations)
        tasks.append(jobs.device_lifecycle(lifecycle.run_safely))
    return poll, lifecycle


def revocation_sync(
    config: ServerConfig, store: Store, client: IntuneClient, revocations: RevocationService
) -> RevocationRounds:
    """Intune revocation rounds that take turns with every other process's (the worker's, the CLI's)."""
    sync = RevocationSync(
        store, client, revocations, batch_size=config.intune.revocation_batch_size,
        issuer_filter=config.intune.revocation_issuer_filter,
    )
    return RevocationRounds(sync, LockFactory(store)(INTUNE_REVOCATION_ROUND))
