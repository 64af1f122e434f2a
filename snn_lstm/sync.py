"""`snnlstm sync run=<run folder>`: replay what a training run could not send to
MLflow (its tracking_backlog.jsonl, written while the store was unreachable) into
the store it names, or into `tracking.uri` when given."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from snn_lstm.config import CONFIG_PATH
from snn_lstm.errors import UserError, reports_user_errors, run_reporting_errors
from snn_lstm.tracking import BACKLOG, replay, root_cause

log = logging.getLogger("snnlstm.sync")


def sync(run: str, uri: str | None) -> str:
    backlog = Path(run) / BACKLOG
    if not backlog.is_file():
        raise UserError(f"{backlog} does not exist: run= must be a run folder whose tracking fell back to a backlog")
    try:
        tracker = replay(backlog, uri)
    except UserError:  # a damaged backlog (read before the store is contacted), or the store's own report
        raise
    except Exception as error:  # the store is still down: the backlog stays for the next try
        raise UserError(f"MLflow store still failing ({root_cause(error)}): {backlog} is kept, try again")
    return tracker.describe()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="sync")
@reports_user_errors("sync")
def hydra_app(cfg: DictConfig) -> None:
    print(f"replayed into {sync(cfg.run, cfg.tracking.uri)}")


def main() -> None:
    run_reporting_errors("sync", hydra_app)


if __name__ == "__main__":
    main()
