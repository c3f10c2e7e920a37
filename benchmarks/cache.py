"""Generated benchmark data sets, built once into a cache folder."""
import os
import shutil
import tempfile


def cached_folder(cache_dir, name, fill, progress):
    """cache_dir/name, made by fill(tmp) in a temporary folder renamed into place.

    So a folder that exists is complete, and a concurrent or interrupted run never sees a half-written one.
    """
    root = os.path.join(cache_dir, name)
    if os.path.isdir(root):
        return root
    os.makedirs(cache_dir, exist_ok=True)
    progress(f"generating {root}")
    tmp = tempfile.mkdtemp(prefix=name + ".tmp-", dir=cache_dir)
    try:
        fill(tmp)
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(root):  # not a lost race with a concurrent run
            raise
    return root
