"""The pure diff: desired (spec) vs recorded (state store) vs observed (driver) → Plan.

No I/O, no clock: the same inputs give the same plan, with actions sorted by service name.
At most one action per service; its kind says what the user changed, and the other findings
ride along as extra reasons. Precedence:

  CREATE   desired, not recorded (or recorded without a current release)
  DESTROY  recorded, not desired
  REPLACE  a new release (image or instance config differs), or live instances of another
           (usually older) release: a roll-out that did not finish
  SCALE    replicas differ
  HEAL     same release and replicas; instances to replace (exited, missing, left stopping)
           or a live count that differs from replicas (a crash between two steps)
  UPDATE   only route/strategy settings differ; no instance is touched

Observations (`observed`) only add reasons; when they are not available (None) the rules that
need them are skipped. Observed running instances with no live record are orphans: reported in
`Plan.notes`/`Plan.orphans` and never acted on, since the recorded state is what corral owns
(such an instance may belong to another state store using the same project and environment).
Exited ones with no live record are remains of stopped instances and are not reported.
`observed` is expected to hold only this project's and environment's instances (a driver
observes per project and environment).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from corral.errors import StateError, UsageError
from corral.plan.fingerprint import fingerprint
from corral.plan.model import (
    Action,
    ActionKind,
    DesiredService,
    ObservedInstanceView,
    Plan,
    Reason,
    ReasonKind,
    RecordedInstance,
    RecordedRelease,
    RecordedService,
)
from corral.releases import flatten
from corral.secrets.labels import version_label

SENSITIVE = "(sensitive)"  # stands in for secret references: a plan never holds them (law 5)
_STOPPING = "stopping"


def diff(
    desired: Sequence[DesiredService],
    recorded: Sequence[RecordedService],
    observed: Sequence[ObservedInstanceView] | None,
    *,
    environment: str = "dev",
    project: str = "",
) -> Plan:
    """The actions that bring the recorded (and observed) fleet to the desired one."""
    wanted = _by_name(desired, "desired", UsageError)
    known = _by_name(recorded, "recorded", StateError)
    seen = {view.id: view for view in observed} if observed is not None else None

    actions: list[Action] = []
    notes: list[str] = []
    for name in sorted(wanted.keys() | known.keys()):
        want, have = wanted.get(name), known.get(name)
        if want is None:
            assert have is not None
            actions.append(_destroy(have))
        elif have is None or have.current is None:
            actions.append(_create(want, have))
        else:
            action = _change(want, have, seen)
            if action is None:
                notes.append(_nothing_to_do(want, have, seen))
            else:
                actions.append(action)

    # a single_writer volume is handed over stop-first: say the route will hold requests
    notes.extend(
        f"{a.service}: a single_writer volume is handed over stop-first: each replacement "
        f"stops the old instance before the new one starts, and the route holds new requests "
        f"meanwhile (up to {wanted[a.service].settings['handover_timeout']:g}s)"
        for a in actions
        if a.kind is ActionKind.REPLACE
        and a.service in wanted
        and wanted[a.service].settings.get("handover_timeout") is not None
    )
    orphans = _orphans(recorded, observed)
    notes.extend(
        f"{view.service}: instance {view.id} runs with no live record "
        f"({ReasonKind.INSTANCE_UNKNOWN.value}); left alone, as corral stops only what it "
        "recorded: stop it by hand if nothing else owns it"
        for view in orphans
    )
    return Plan(
        actions=tuple(actions),
        state_fingerprint=fingerprint(recorded),
        desired=tuple(wanted[name] for name in sorted(wanted)),
        environment=environment,
        project=project,
        notes=tuple(notes),
        orphans=orphans,
    )


_Named = TypeVar("_Named", DesiredService, RecordedService)


def _by_name(
    items: Iterable[_Named], what: str, error: type[UsageError] | type[StateError]
) -> dict[str, _Named]:
    index: dict[str, _Named] = {}
    for item in items:
        if item.name in index:
            raise error(
                f"service {item.name!r} appears twice in the {what} services; "
                "a service name must be unique in an environment"
            )
        index[item.name] = item
    return index


def _live(service: RecordedService) -> list[RecordedInstance]:
    return sorted(service.instances, key=lambda i: (i.serial, i.id))


def _target_release(want: DesiredService, have: RecordedService | None) -> tuple[int, bool]:
    """(number, is_new): an identical known release is reused, else the next number."""
    if have is None:
        return 1, True
    for release in have.releases:
        if (release.image_digest, release.config_hash) == (want.image_digest, want.config_hash):
            return release.number, False
    return have.next_release_number, True


def _create(want: DesiredService, have: RecordedService | None) -> Action:
    number, is_new = _target_release(want, have)
    reasons = [Reason(ReasonKind.NEW_SERVICE)]
    live = _live(have) if have is not None else []
    # Recorded without a current release: a first roll-out that never finished; its leftovers go.
    reasons.extend(
        Reason(
            ReasonKind.INCOMPLETE_ROLLOUT,
            attribute="release",
            before=f"r{instance.release}",
            after=f"r{number}",
            instance_id=instance.id,
        )
        for instance in live
    )
    return Action(
        service=want.name,
        kind=ActionKind.CREATE,
        from_release=None,
        to_release=number,
        reasons=tuple(reasons),
        replicas_before=len(live) if live else None,
        replicas_after=want.replicas,
        instance_ids=tuple(i.id for i in live),
        new_release=is_new,
    )


def _destroy(have: RecordedService) -> Action:
    live = _live(have)
    return Action(
        service=have.name,
        kind=ActionKind.DESTROY,
        from_release=have.current.number if have.current else None,
        to_release=None,
        reasons=(Reason(ReasonKind.NOT_IN_SPEC),),
        replicas_before=len(live),
        replicas_after=0,
        instance_ids=tuple(i.id for i in live),
    )


def _change(
    want: DesiredService,
    have: RecordedService,
    seen: Mapping[str, ObservedInstanceView] | None,
) -> Action | None:
    current = have.current
    assert current is not None
    live = _live(have)
    others = [i for i in live if i.release != current.number]
    new_key = (want.image_digest, want.config_hash) != (current.image_digest, current.config_hash)
    if new_key:
        to_release, is_new = _target_release(want, have)
        reasons = attribute_reasons(current, want)
        replaced = [i.id for i in live]  # a new release replaces every instance
    else:
        to_release, is_new = current.number, False
        reasons = _unfinished(live, current.number)
        replaced = [r.instance_id for r in reasons if r.instance_id is not None]

    going = frozenset(replaced)
    dead = _dead(live, seen, skip=frozenset() if new_key else going)
    reasons.extend(dead)
    replaced.extend(r.instance_id for r in dead if r.instance_id and r.instance_id not in going)

    replicas_changed = want.replicas != have.replicas
    if replicas_changed:
        reasons.append(
            Reason(
                ReasonKind.REPLICAS, attribute="replicas", before=have.replicas, after=want.replicas
            )
        )
    drift = None if new_key or others else _replica_drift(live, have.replicas)
    if drift is not None:
        reasons.append(drift)
    settings = setting_reasons(have.settings, want.settings)
    reasons.extend(settings)

    if new_key or others:
        kind = ActionKind.REPLACE
    elif replicas_changed:
        kind = ActionKind.SCALE
    elif replaced or drift is not None:
        kind = ActionKind.HEAL
    elif settings:
        kind = ActionKind.UPDATE
    else:
        return None
    return Action(
        service=want.name,
        kind=kind,
        from_release=min(i.release for i in others) if others and not new_key else current.number,
        to_release=to_release,
        reasons=tuple(reasons),
        replicas_before=len(live),
        replicas_after=want.replicas,
        instance_ids=tuple(replaced),
        new_release=is_new,
    )


def _unfinished(live: Sequence[RecordedInstance], current: int) -> list[Reason]:
    """Live instances a crashed change left behind: of another release (a roll-out that did
    not finish; usually an older one, or a newer one whose roll-out never became current),
    or of the current release but already being stopped."""
    reasons: list[Reason] = []
    for instance in live:
        if instance.release != current:
            before, after, attribute = f"r{instance.release}", f"r{current}", "release"
        elif instance.state == _STOPPING:
            before, after, attribute = _STOPPING, None, "state"
        else:
            continue
        reasons.append(
            Reason(
                ReasonKind.INCOMPLETE_ROLLOUT,
                attribute=attribute,
                before=before,
                after=after,
                instance_id=instance.id,
            )
        )
    return reasons


def _replica_drift(live: Sequence[RecordedInstance], replicas: int) -> Reason | None:
    """Live records counted against what was last applied: a crash between two steps of a
    roll-out or heal leaves too few or too many behind."""
    counted = sum(1 for i in live if i.state != _STOPPING)
    if counted == replicas:
        return None
    kind = ReasonKind.UNDER_REPLICATED if counted < replicas else ReasonKind.OVER_REPLICATED
    return Reason(kind, attribute="live_instances", before=counted, after=replicas)


def _dead(
    live: Sequence[RecordedInstance],
    seen: Mapping[str, ObservedInstanceView] | None,
    *,
    skip: frozenset[str],
) -> list[Reason]:
    """Live records whose instance the runtime shows exited, or does not show at all."""
    if seen is None:
        return []
    reasons: list[Reason] = []
    for instance in live:
        if instance.id in skip:
            continue
        view = seen.get(instance.id)
        if view is None:
            reasons.append(Reason(ReasonKind.INSTANCE_MISSING, instance_id=instance.id))
        elif not view.running:
            reasons.append(Reason(ReasonKind.INSTANCE_EXITED, instance_id=instance.id))
    return reasons


def attribute_reasons(before: RecordedRelease, after: DesiredService) -> list[Reason]:
    """One ATTRIBUTE reason per instance-defining attribute that differs: image first, then the
    flattened config (`command`, `env.GREETING`, `health.http.path`, …) by name."""
    reasons: list[Reason] = []
    if before.image_digest != after.image_digest:
        reasons.append(_forcing("image", before.image_digest, after.image_digest))
    old, new = before.config, after.config
    config = [
        _forcing(name, was, becomes)
        for name, was, becomes in _changed(_flat_without_secrets(old), _flat_without_secrets(new))
    ]
    config.extend(_secret_reasons(old.get("secrets"), new.get("secrets")))
    if not config and before.config_hash != after.config_hash:
        # The hash moved but no attribute did: the canonical form itself changed.
        if old.get("v") != new.get("v"):
            config.append(_forcing("config.v", old.get("v"), new.get("v")))
        else:
            config.append(_forcing("config_hash", before.config_hash, after.config_hash))
    return reasons + config


def setting_reasons(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Reason]:
    """SETTING reasons (`route.port`, `strategy.max_surge`, …): changed without replacing."""
    if before == after:
        return []
    return [
        Reason(ReasonKind.SETTING, attribute=name, before=old, after=new)
        for name, old, new in _changed(_flat(dict(before)), _flat(dict(after)))
    ]


def _forcing(attribute: str, before: Any, after: Any) -> Reason:
    return Reason(
        ReasonKind.ATTRIBUTE,
        attribute=attribute,
        before=before,
        after=after,
        forces_replacement=True,
    )


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    # An empty mapping is no attribute at all, so `env: {}` → `env: {A: 1}` reads `env.A`.
    return {name: value for name, value in flatten(config).items() if value != {}}


def _flat_without_secrets(config: dict[str, Any]) -> dict[str, Any]:
    return _flat({key: value for key, value in config.items() if key != "secrets"})


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, before, after) for each attribute that differs; absent reads as None."""
    return [
        (name, old.get(name), new.get(name))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    ]


def _secret_reasons(old: Any, new: Any) -> list[Reason]:
    """A changed secret shows as `secrets.NAME` with its versions (`v3` → `v4`), never with
    its reference or value (law 5)."""
    old_refs: dict[str, Any] = old if isinstance(old, dict) else {}
    new_refs: dict[str, Any] = new if isinstance(new, dict) else {}
    return [
        _forcing(
            f"secrets.{name}",
            version_label(old_refs[name]) if name in old_refs else None,
            version_label(new_refs[name]) if name in new_refs else None,
        )
        for name in sorted(old_refs.keys() | new_refs.keys())
        if old_refs.get(name) != new_refs.get(name)
    ]


def _nothing_to_do(
    want: DesiredService,
    have: RecordedService,
    seen: Mapping[str, ObservedInstanceView] | None,
) -> str:
    release = f"r{have.current.number}" if have.current else "no release"
    live = len(have.instances)
    if seen is None:
        return (
            f"{want.name}: {release} has {live}/{want.replicas} live instances on record "
            "(runtime not observed); nothing to do"
        )
    return f"{want.name}: {release} already running {live}/{want.replicas}; nothing to do"


def _orphans(
    recorded: Sequence[RecordedService], observed: Sequence[ObservedInstanceView] | None
) -> tuple[ObservedInstanceView, ...]:
    if observed is None:
        return ()
    owned = {instance.id for service in recorded for instance in service.instances}
    return tuple(
        sorted(
            (view for view in observed if view.running and view.id not in owned),
            key=lambda view: (view.service, view.id),
        )
    )
