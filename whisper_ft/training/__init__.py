"""The training room: the LightningModule, checkpointing, what a failing step does, throughput,
and the callback that writes a test's results. Imports data, models, evaluation and the core."""
