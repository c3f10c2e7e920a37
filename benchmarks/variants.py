"""The normalizers compared, built through norms.build_norm; the fused ones only where norms offers `impl`."""
import norms

# name -> (norm type, options, implementations to try in order; None = build_norm without `impl`)
VARIANTS = {
    "bn": ("bn", {}, [None]),
    "gn": ("gn", {"groups": 32}, ["reference", None]),
    "gn-fused": ("gn", {"groups": 32}, ["fused"]),
    "sn-reference": ("sn", {}, ["reference", None]),
    "sn-fused": ("sn", {}, ["fused"]),
}
BASELINE = "bn"


def resolve(name):
    """(factory, description) for a variant, or (None, why it is not available)."""
    kind, options, impls = VARIANTS[name]
    reasons = []
    for impl in impls:
        kwargs = dict(options) if impl is None else dict(options, impl=impl)
        try:
            factory = norms.build_norm(kind, **kwargs)
        except (ValueError, TypeError) as error:
            reasons.append(str(error))
            continue
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return factory, f"build_norm({kind!r}{', ' if args else ''}{args})"
    return None, "not available: " + "; ".join(reasons)


def resolve_all(names):
    """{name: {"factory", "description"} or {"factory": None, "reason"}} for the requested variants."""
    out = {}
    for name in names:
        factory, text = resolve(name)
        out[name] = {"factory": factory, "description" if factory else "reason": text}
    return out


def describe(resolved):
    """JSON-friendly view of resolve_all's result (no factories)."""
    return {name: ({"available": True, "build": v["description"]} if v["factory"] else
                   {"available": False, "reason": v["reason"]}) for name, v in resolved.items()}
