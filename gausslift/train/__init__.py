"""The one training loop and the habits every trainer shares (layer 1: torch, numpy and layer 0 only).
Import the submodules:

``gausslift.train.loop``
    ``Loop(task, run, LoopOptions(...), dist).run()``: the loop every trainer runs on (budget planned
    once, explicit resume with shape checks, named atomic checkpoints, logs, the non-finite guard with
    rollback, torchrun); a trainer is a ``Task`` (its model, batch and loss).
``gausslift.train.dist``
    ``setup_dist(device, backend) -> Dist`` (rank, world, device; NCCL on CUDA, gloo on CPUs), collectives
    on device tensors, ``shard`` by rank.

``gausslift.train.device``
    ``resolve_device(spec="auto"|"cpu"|"cuda"|"cuda:N", backend=None) -> torch.device`` (auto = CUDA
    when it is usable by the backend; ``DeviceError``, one line, otherwise), ``cuda_usable()``,
    ``synchronize(device)``.
``gausslift.train.checkpoint``
    ``save_checkpoint(path, data)`` (atomic; every tensor moved to the CPU first, so files are
    device-independent), ``load_checkpoint(path, map_location="cpu")`` (``InputError`` on a missing
    or unreadable file), ``rng_state(gen=None)`` / ``set_rng_state(state, gen=None)`` (python,
    numpy, torch, CUDA when initialised, an optional generator), ``to_cpu(obj)`` / ``to_device(obj, d)``.
``gausslift.train.budget``
    ``Budget(minutes=0, steps=0)``: ``elapsed()``, ``left()``, ``done(step, reserve)``,
    ``fraction(step)``, ``state()`` / ``restore(state)`` (time spent carries across a resume).
``gausslift.train.guard``
    ``NonFiniteGuard(max_consecutive=K)``: ``check(loss) -> bool`` (False: skip the step), ``rollback``
    (K non-finite losses in a row), ``reset()``; ``all_finite(tensors)``.
``gausslift.train.runlog``
    ``RunLog(run, columns, resume_step=None)``: ``write(row)`` to log.jsonl / log.csv / TensorBoard
    (tensor values read back only there), ``log_images(tag, images, step)``; ``image_grid``,
    ``to_scalars``. Progress bars: ``gausslift.progress.progress``.
"""
