"""`bench attention`: train (or load) a small model and draw one example's attention weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from attnbench.cli import Choice, NonEmptyPath, cli, console, plugin_option, resolve_device
from attnbench.errors import AttnbenchError, user_code
from attnbench.limits import MAX_SEED
from attnbench.selection import Selected, parse_one
from attnbench.variants.base import VARIANTS, get_variant_spec




def _head(text: str) -> int | None:
    """'mean' → None; '3' → 2 (0-based); anything else is a one-line error."""
    if text.strip().lower() == "mean":
        return None
    try:
        value = int(text)
    except ValueError:
        raise AttnbenchError(f"--head: expected a head number (1, 2, …) or 'mean', got {text!r}") from None
    if value < 1:
        raise AttnbenchError(f"--head: heads count from 1, got {value}")
    return value - 1


@cli.command("attention")
@click.option("--variant", required=True, help="One variant, options inline: 'local(window=4)'.")
@click.option("--task", required=True, help="One task, options inline: 'copy(reverse=true)'.")
@click.option("--text", default=None,
              help="Draw this text instead of a test example: bytes for text-cls, sentiment, char-lm; "
                   "vocabulary words for agreement, translation.")
@click.option("--out", type=NonEmptyPath("name a figure file, e.g. --out attention.png", path_type=Path), default=None,
              help="Figure file, .png (default), .svg or .pdf (default ./attention-VARIANT-TASK.png).")
@click.option("--profile", default="quick", show_default=True, help="Model size and training budget (bench ls profiles).")
@click.option("--seq-len", type=click.IntRange(min=1), default=None, help="Sequence length (default: the profile's for the task).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Training steps (default: the profile's).")
@click.option("--layer", type=click.IntRange(min=1), default=None, help="Layer to draw, 1 = nearest the input (default: the last).")
@click.option("--head", "head_text", default="mean", show_default=True, help="Head to draw (1, 2, …) or 'mean' over heads.")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=0, show_default=True,
              help="Seed of data, init and batches.")
@click.option("--example", type=click.IntRange(min=0), default=0, show_default=True, help="Index of the test example.")
@click.option("--cross", default=None, help="Variant for seq2seq cross-attention (default: the same variant).")
@click.option("--device", type=Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Load a checkpoint written by --save-weights instead of training; it must be for the "
                   "same variant, task and model size.")
@click.option("--save-weights", type=click.Path(path_type=Path), default=None,
              help="Write the trained model's checkpoint here (its state dict with the variant, task "
                   "and model size), for a later --weights.")
@plugin_option
def attention_command(variant, task, text, out, profile, seq_len, steps, layer, head_text, seed, example, cross,
                      device, weights, save_weights) -> None:
    """Train a small model and draw one example's attention weights as a heatmap with token labels.

    Self-attention of one layer (one head, or the mean over heads) for classify, tag and lm tasks;
    for translation, the decoder's cross-attention (target × source) with the gold alignment boxed,
    each row's most-attended source word dotted and the alignment error rate in the title. The
    model is the profile's (quick: d_model 64, 2 layers, 4 heads, 160 steps) unless --steps says.

    \b
    Examples:
      bench attention --variant multi-head --task copy
      bench attention --variant additive --task translation --out alignment.png
      bench attention --variant dot-product --task sentiment --text "a fine movie"
      bench attention --variant 'local(window=4)' --task copy --layer 1 --head 2
      bench attention --variant linear --task agreement --save-weights lin.pt
      bench attention --variant linear --task agreement --weights lin.pt --text "the keys to the cabinet"
    """
    from attnbench.runner.attention_map import (  # matplotlib loads only for this command
        AttentionRequest,
        attention_figure,
        default_out,
        score_line,
    )
    from attnbench.runner.profiles import PROFILES
    from attnbench.tasks.base import TASKS

    chosen_head = _head(head_text)
    plan = PROFILES[profile]
    v = parse_one(variant, VARIANTS, lambda n: get_variant_spec(n).options, what="--variant")
    t = parse_one(task, TASKS, lambda n: TASKS[n].spec.options, what="--task")
    v_options = v.options or plan.variant_options.get(v.name, {})
    t_options = {**plan.task_options.get(t.name, {}), **t.options}
    cross_choice = parse_one(cross, VARIANTS, lambda n: get_variant_spec(n).options, what="--cross") if cross else None
    settings = plan.train if steps is None else replace(plan.train, steps=steps)
    request = AttentionRequest(
        variant=v.name,
        task=t.name,
        seq_len=seq_len or plan.lengths_for(t.name)[0],
        size=plan.size,
        settings=settings,
        out=out or default_out(Selected(v.name, v_options).label, t.label),
        variant_options=v_options,
        task_options=t_options,
        cross=(cross_choice.name, cross_choice.options) if cross_choice else None,
        seed=seed,
        layer=None if layer is None else layer - 1,
        head=chosen_head,
        text=text,
        example=example,
        weights=weights,
        save_weights=save_weights,
        device=resolve_device(device),
    )
    with user_code(f"{v.label} on {t.label}"):  # the variant's or task's own fault: one line, where it was raised
        outcome = attention_figure(request)
    unused = [f"--steps {steps}: --weights loads a trained model, so no step is run; ignored"] if (
        weights is not None and steps is not None) else []  # loaded, not trained: nothing took the steps
    given = click.get_current_context().get_parameter_source("example") == click.core.ParameterSource.COMMANDLINE
    if text is not None and given:  # the figure is of the text: no test example is drawn
        unused.append(f"--example {example}: --text gives the input, so no test example is drawn; ignored")
    if cross_choice is not None and TASKS[t.name].spec.kind != "seq2seq":
        unused.append(f"--cross {cross}: {t.label} is no seq2seq task, so nothing attends across; ignored")
    for warning in [*unused, *outcome.warnings]:
        click.echo(f"bench: warning: {warning}", err=True)
    record = outcome.record
    trained = f"weights from {weights}" if weights else f"{record['steps']} steps"
    console.print(f"{score_line(record)}, {trained}", highlight=False)
    if outcome.amap.aer is not None:
        line = f"alignment error rate {outcome.amap.aer:.3f} on this example"
        if outcome.test_aer is not None:
            line += f", {outcome.test_aer:.3f} on the test split"
        console.print(line, highlight=False)
    if save_weights:
        console.print(f"wrote weights {save_weights}", highlight=False, soft_wrap=True)
    console.print(f"wrote {outcome.path}", highlight=False, soft_wrap=True)
