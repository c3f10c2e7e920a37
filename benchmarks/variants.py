"""The normalizers compared, built through norms.build_norm."""
import norms

# name -> (norm type, options)
VARIANTS = {
    "bn": ("bn", {}),
    "gn": ("gn", {"groups": 32, "impl": "reference"}),
    "gn-fused": ("gn", {"groups": 32, "impl": "fused"}),
    "sn-reference": ("sn", {"impl": "reference"}),
    "sn-fused": ("sn", {"impl": "fused"}),
}
BASELINE = "bn"


def resolve(name):
    """(factory, description) for a variant, or (None, why it is not available)."""
    kind, options = VARIANTS[name]
    try:
        factory = norms.build_norm(kind, **options)
    except (ValueError, TypeError) as error:
        return None, f"not available: {error}"
    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return factory, f"build_norm({kind!r}{', ' if args else ''}{args})"


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
