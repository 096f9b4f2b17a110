"""Push an exported folder (make export) to the Hub: create the repo, upload the folder in one commit.

    python recipes/push.py --folder outputs/tiny/export --dry_run true      # validate and list, upload nothing
    python recipes/push.py --folder outputs/tiny/export --repo_id you/tiny-chat --private true --revision v0.1

The token comes from the environment (HF_TOKEN) or the saved login (`hf auth login`), never from a config file, and is
never printed or written. `--dry_run` needs no token: it validates the repo id and the folder (a model, a card, no
local path or token inside) and lists what would be uploaded.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from huggingface_hub import create_branch, create_repo, get_token, upload_folder
from huggingface_hub.utils import HFValidationError, validate_repo_id

from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.hub.folder import check_no_leaks

logger = logging.getLogger("push")
logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per HTTP request otherwise


@dataclass
class PushArguments:
    folder: str = field(default="outputs/tiny/export", metadata={"help": "The exported folder (make export)."})
    repo_id: str | None = field(
        default=None, metadata={"help": "Hub repo (user/name); default: the repo_id the folder was exported for."})
    private: bool = field(default=False, metadata={"help": "Create the repo private (an existing repo keeps its "
                                                           "visibility)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to commit to (created from main when "
                                                                 "missing); default: main."})
    commit_message: str | None = field(
        default=None, metadata={"help": "Default: names the repo and the recipe stages the model went through."})
    dry_run: bool = field(default=False, metadata={"help": "Validate and list what would be uploaded; no network."})


def make_parser() -> RecipeParser:
    return RecipeParser(PushArguments)


def recipe_stages(folder: Path) -> list[str]:
    """Stage names from training_recipe/NN-<stage>.yaml, oldest first."""
    return [p.stem.split("-", 1)[1] for p in sorted((folder / "training_recipe").glob("[0-9][0-9]-*.yaml"))]


def exported_repo_id(folder: Path) -> str | None:
    exports = sorted((folder / "training_recipe").glob("[0-9][0-9]-export.yaml"))
    return (yaml.safe_load(exports[-1].read_text()) or {}).get("repo_id") if exports else None


def check_folder(args: PushArguments) -> tuple[Path, str, list[Path]]:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise ConfigError(f"folder {folder}: no such folder (run make export first)")
    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        raise ConfigError(f"folder {folder}: not a model or adapter folder (no config.json / adapter_config.json)")
    if not (folder / "README.md").is_file():
        raise ConfigError(f"folder {folder}: no README.md model card (export it with make export)")
    repo_id = args.repo_id or exported_repo_id(folder)
    if not repo_id:
        raise ConfigError("repo_id: not given and not recorded in the folder's training_recipe/; pass --repo_id")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"repo_id {repo_id!r}: {str(e).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise ConfigError(f"repo_id {repo_id!r}: use <user or org>/<name>")
    check_no_leaks(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return folder, repo_id, files


def main(argv: list[str] | None = None) -> str | None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        folder, repo_id, files = check_folder(args)
    except ConfigError as e:
        parser.error(str(e))
    stages = recipe_stages(folder)
    message = args.commit_message or (f"Upload {repo_id.split('/')[-1]} from llm-recipes "
                                      f"({' -> '.join(stages) or 'export'})")
    where = f"{repo_id}@{args.revision or 'main'}{' (private)' if args.private else ''}"
    print(f"{'would upload' if args.dry_run else 'uploading'} {len(files)} files "
          f"({sum(p.stat().st_size for p in files) / 1e6:.1f} MB) to {where}: {message!r}")
    for p in files:
        print(f"  {p.relative_to(folder).as_posix():<48} {p.stat().st_size:>12,} bytes")
    if args.dry_run:
        print(f"token: {'found' if get_token() else 'none (set HF_TOKEN or run hf auth login before pushing)'}")
        return None
    if not get_token():
        parser.error("no Hub token: set HF_TOKEN or run `hf auth login` (never put a token in a config file)")
    url = create_repo(repo_id, private=args.private, exist_ok=True, repo_type="model")
    if args.revision:
        create_branch(repo_id, branch=args.revision, exist_ok=True)
    commit = upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message, revision=args.revision,
                           ignore_patterns=[".*"])
    print(f"pushed to {url} ({commit.commit_url})")
    return commit.oid


if __name__ == "__main__":
    main(sys.argv[1:])
