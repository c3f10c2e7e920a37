"""A sweep file over two tiny configs, written into a test's folder (configs of depth 18: nothing is trained)."""


def write_yaml(tmp_path, text, configs=("cfg_bn.yaml", "cfg_gn.yaml")):
    """The sweep file `text` as tmp_path/sweep.yaml, beside the configs it names; returns its path."""
    for name in configs:
        (tmp_path / name).write_text("model: {depth: 18}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


SWEEP = """\
name: table
config: cfg_{norm}.yaml
run_name: r50_{norm}_{setting}
axes:
  norm: [bn, gn]
  setting: [8x32, 1x16]
overrides: [optim.lr=0.2, "data.root=/data/{norm}"]
"""
