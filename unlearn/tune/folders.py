"""Where a tuning's studies live, ``{log_root}/tune/{tag}/forget{c}-ood{a}_{b}[-w{sha}]/seed{s}/{method}/``,
and the checkpoint a method's trials start from."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UsageError
from ..methods import pretrain_l1
from ..store.identity import file_sha256
from ..store.setting import Setting


def settings_folder(setting: Setting, weight_path=None) -> Path:
    """``{log_root}/tune/{tag}/forget{c}-ood{a}_{b}[-w{sha}]/seed{s}``: one folder per setting and seed."""
    split = f"forget{setting.forget_class}-ood{'_'.join(map(str, sorted(setting.ood_classes)))}"
    if weight_path:
        split += f"-w{_file_sha(weight_path)[:8]}"
    return Path(setting.log_root) / "tune" / setting.tag / split / f"seed{setting.seed}"


def study_folder(setting: Setting, method: str, weight_path=None) -> Path:
    return settings_folder(setting, weight_path) / method


def _file_sha(path) -> str:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint {p} not found; pass an existing -weight_path")
    return file_sha256(p)


def relative(path: Path, root) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def start_checkpoint(setting: Setting, method: str, weight_path=None) -> Path:
    """The checkpoint a forget run of ``method`` starts from (as :func:`unlearn.stages.forget.unlearn_run`)."""
    return Path(weight_path) if weight_path else setting.pretrain_dir(pretrain_l1(method, setting.dataset)) / "best.pth"
