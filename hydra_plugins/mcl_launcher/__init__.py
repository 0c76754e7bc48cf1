"""mcl's Hydra plugins: `hydra/launcher=parallel` (jobs at once, each on its own GPUs) and
`hydra/sweeper=mcl_rerun` (re-run a sweep's failed and incomplete jobs). Hydra finds them
because they live in the `hydra_plugins` namespace package."""
