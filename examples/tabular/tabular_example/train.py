"""The example's training loop: ``task.trainer: "tabular_example.train:fit"``.

winnow calls it in the worker for every training run, with the interface of its own loop
(``winnow.search_space.trainer``): the candidate's model, optimizer and learning-rate
schedule, the batches, the epochs to reach, a per-epoch callback, a checkpoint and a step cap.
This one differs from winnow's by label smoothing and gradient clipping. It resumes from the
checkpoint, so a promoted candidate trains only its new rung's epochs; winnow then measures
test accuracy and the costs itself. It reports the test accuracy after each epoch too when the
search asks for it (``data.epoch_accuracy``, from ``task.eval_every_epoch``): optional, the
dashboard's learning curve.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from winnow.search_space.checkpoints import capture, restore, saved_accuracy
from winnow.search_space.trainer import Fitted

LABEL_SMOOTHING = 0.1
MAX_GRAD_NORM = 1.0


def fit(model, optimizer, scheduler, data, epochs, on_epoch=None, checkpoint=None, max_steps=None):
    saved = checkpoint.load() if checkpoint is not None else None
    done, curve = restore(saved, model, optimizer, scheduler, data.generator) if saved else (0, [])
    accuracy = saved_accuracy(saved, done) if saved else []
    measured = data.epoch_accuracy and len(accuracy) == done  # a curve is whole or absent
    steps = scheduler.last_epoch  # the steps taken so far (the scheduler counts them)
    for epoch in range(done, epochs):
        start = time.perf_counter()
        model.train()
        losses = []
        for x, y in data.batches():
            if len(y) < 2 or (max_steps is not None and steps >= max_steps):
                continue  # batch norm needs two rows
            loss = F.cross_entropy(model(x), y, label_smoothing=LABEL_SMOOTHING)
            if not torch.isfinite(loss):
                raise ArithmeticError(f"loss became {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            steps += 1
        curve.append(statistics.fmean(losses) if losses else float("nan"))
        if measured:
            accuracy.append(data.accuracy(model))  # leaves the training untouched
        if checkpoint is not None:
            state = capture(model, optimizer, scheduler, data.generator, epoch + 1, curve, accuracy)
            checkpoint.save(state)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, curve[-1], time.perf_counter() - start)
    return Fitted(curve, epochs - done, accuracy if measured else [])
