"""Project hooks."""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl

from spectral_training.cubes.ingest import check_dataset_name

log = logging.getLogger(__name__)


class DatasetNameHooks:
    """Refuse a dataset name that is not a plain folder name before anything is read or written.

    The name is spliced into every catalog path, so '../x' or 'a/b' would escape data/<layer>/.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        name = context.params.get("dataset")
        check_dataset_name(name)
        log.info("dataset: %s", name)
