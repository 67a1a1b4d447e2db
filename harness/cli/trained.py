"""Commands on one trained run: ``harness sample``, ``score``, ``evaluate`` and ``translate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness.cli.common import loaded_plugins, parse_assignment, strict_plugins_option


@click.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.option("--count", default=None, type=int, help="How many samples.  [default: 5; music: 1]")
@click.option("--length", default=100, show_default=True,
              help="Stop after this many tokens (or at <EOS>); music: sample this many time steps.")
@click.option("--temperature", default=1.0, show_default=True, help="< 1 sharper, > 1 flatter.")
@click.option("--prime", default=None,
              help="Text to start from, tokenized by the run's task (words; characters for a character model).")
@click.option("--reject-unk", is_flag=True, help="Never emit <UNK> (resample from the rest).")
@click.option("--seed", default=0, show_default=True)
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.option("--prime-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Music: start from the first K steps of the first test piece (reads the run's data set).")
@click.option("--output", default="sample.mid", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Music: the MIDI file to write (a piano-roll PNG goes next to it; -1, -2, … for several).")
@click.pass_context
def sample(ctx: click.Context, run_reference: str, count: int | None, length: int, temperature: float,
           prime: str | None, reject_unk: bool, seed: int, tracking_uri: str | None, prime_steps: int,
           output: Path) -> None:
    """Print samples from a trained language model, or write music samples as MIDI + PNG.

    RUN is the run's artifact folder (the `path` column of results.csv) or its MLflow run id.
    Outputs: text samples go to stdout; music goes to --output (default ./sample.mid) with a
    piano-roll PNG beside it.
    """
    from harness.training.checkpoints import load_trained_run, run_directory
    from harness.training.generate import sample_language_model, sample_music

    trained = load_trained_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx))
    if trained.task.family == "multilabel_sequence":
        for path in sample_music(trained, count=count or 1, length=length, temperature=temperature,
                                 prime_steps=prime_steps, seed=seed, output=output, prime=prime,
                                 reject_unk=reject_unk):
            click.echo(str(path))
        return
    samples = sample_language_model(trained, count=5 if count is None else count, length=length,
                                    temperature=temperature, prime=prime, reject_unk=reject_unk, seed=seed,
                                    prime_steps=prime_steps, reference=run_reference)
    multiline = any("\n" in text for text in samples)  # character models: a sample spans lines
    for index, text in enumerate(samples):
        if multiline:
            click.echo(f"----- sample {index + 1} -----")
        click.echo(text)


@click.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.argument("sentences", nargs=-1, required=True)
@click.option("--per-token", is_flag=True, help="Also print log P of each token given the ones before it.")
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.pass_context
def score(ctx: click.Context, run_reference: str, sentences: tuple[str, ...], per_token: bool,
          tracking_uri: str | None) -> None:
    """Print log P(sentence) under a trained language model, for each SENTENCE.

    log P(y<1>, …, y<T>) is the sum of log P(y<t> | y<1>, …, y<t-1>), read from the zero state
    after the model's start context (<BOS> for sentence models, <EOS> for word streams, a newline
    for character streams), with the end of the sentence (<EOS>) included when the model has one.
    Printed in nats and as log10; words outside the vocabulary are scored as <UNK> and flagged.
    Prints to stdout; writes no files.
    """
    from harness.training.checkpoints import load_trained_run, run_directory
    from harness.training.generate import score_language_model

    trained = load_trained_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx))
    for sentence, scored in zip(sentences, score_language_model(trained, list(sentences), reference=run_reference)):
        flagged = f"  [scored as <UNK>: {', '.join(scored.unknown)}]" if scored.unknown else ""
        click.echo(f"{scored.log_prob:.4f} nats  log10 {scored.log10_prob:.4f}  "
                   f"({len(scored.tokens)} tokens)  {sentence}{flagged}")
        if per_token:
            for token in scored.tokens:
                shown = f"{token.token!r} as {token.scored_as}" if token.unknown else repr(token.token)
                click.echo(f"    {token.log_prob:10.4f}  {shown}")


@click.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.option("--split", type=click.Choice(["test", "validation", "train"]), default="test", show_default=True,
              help="Which split of the task's data to score.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a task option of the run, e.g. --set data_dir=/data (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.pass_context
def evaluate(ctx: click.Context, run_reference: str, split: str, overrides: tuple[str, ...], as_json: bool,
             tracking_uri: str | None) -> None:
    """Score a finished run's saved network on a split of its task's data.

    RUN is the run's artifact folder (the `path` column of results.csv) or its MLflow run id.
    The task is loaded again with the run's recorded options (plus --set); if its rebuilt
    vocabularies differ from the saved ones the command refuses (exit 2) and shows both hashes.
    Prints to stdout (--json for JSON); writes no files.
    """
    from harness.training.checkpoints import run_directory
    from harness.training.evaluation import evaluate_run, format_evaluation

    changes = dict(parse_assignment(o) for o in overrides)
    evaluation = evaluate_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx), split=split,
                              overrides=changes)
    if as_json:
        click.echo(json.dumps(evaluation.as_dict(), indent=2))
        return
    for line in format_evaluation(evaluation):
        click.echo(line)


@click.command()
@strict_plugins_option
@click.argument("run_reference", metavar="RUN")
@click.argument("sentences", nargs=-1)
@click.option("--beam", "beam_size", default=None, type=click.IntRange(min=1),
              help="Beam size K (1: greedy).  [default: the run's task setting]")
@click.option("--max-length", default=None, type=click.IntRange(min=1),
              help="Most tokens per translation, <EOS> included.  [default: the run's task setting, else 100]")
@click.option("--tracking-uri", default=None, help="Where to look up RUN when it is an MLflow run id.")
@click.pass_context
def translate(ctx: click.Context, run_reference: str, sentences: tuple[str, ...], beam_size: int | None,
              max_length: int | None, tracking_uri: str | None) -> None:
    """Translate SENTENCES (or one per line of stdin) with a trained seq2seq run; prints one line each.

    RUN is the run's artifact folder (the `path` column of results.csv) or its MLflow run id.
    Translations go to stdout, notes about unknown words to stderr; writes no files.
    """
    from harness.training.checkpoints import load_trained_run, run_directory
    from harness.training.decoding import translate as translate_sentences

    trained = load_trained_run(run_directory(run_reference, tracking_uri), loaded_plugins(ctx))
    texts = list(sentences) or [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise click.UsageError("give sentences to translate, as arguments or on stdin")
    for translation in translate_sentences(trained, texts, beam_size=beam_size, max_length=max_length):
        if translation.unknown:
            click.echo(f"note: not in the source vocabulary (read as <UNK>): {' '.join(translation.unknown)}",
                       err=True)
        click.echo(translation.text)
