"""The command line as a user meets it: one-line errors, exit codes, files written whole, and
their contents; and the held-out split that ``demo`` and ``compare`` report accuracy on.

Most tests call :func:`rlhf_fast.__main__.main` in this process at small sizes; a few run
``python -m rlhf_fast`` in a subprocess to see exactly what a shell sees.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import rust_only

import rlhf_fast as rl
from rlhf_fast.__main__ import main
from rlhf_fast.heldout import HELDOUT_BAGS, heldout_split, response_bag
from rlhf_fast.reference import BAD_WORDS, GOOD_WORDS, PROMPTS, VOCAB

SMALL_SWEEP = ("sweep", "--betas", "0", "0.5", "--seeds", "3", "--steps", "40", "--quiet")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``python -m rlhf_fast *argv``, run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def shell(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_fast", *argv], capture_output=True, text=True, timeout=120,
                          check=False)


def assert_one_line_error(code: int, err: str, command: str, message: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"python -m rlhf_fast {command}: error: "), err
    assert message in err, err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("sweep", "--betas", "0", "-1"), "argument --betas: must be a finite number >= 0, got -1"),
        (("sweep", "--betas", "0", "nan"), "argument --betas: must be a finite number >= 0, got nan"),
        (("sweep", "--betas", "x"), "argument --betas: must be a number, got 'x'"),
        (("sweep", "--betas", "0", "--steps", "0"), "argument --steps: must be an integer >= 1, got 0"),
        (("sweep", "--betas", "0", "--seeds", "ten"), "argument --seeds: must be an integer, got 'ten'"),
        (("sweep", "--betas", "0", "--lr", "0"), "argument --lr: must be a finite number > 0, got 0"),
        (("sweep", "--betas", "0", "--lr", "inf"), "argument --lr: must be a finite number > 0, got inf"),
        (("sweep", "--betas", "0", "--record-every", "-1"), "argument --record-every: must be an integer >= 0"),
        (("sweep", "--betas", "0", "--threads", "0"), "argument --threads: must be an integer >= 1, got 0"),
        (("sweep", "--betas", "0", "--format", "json"), "argument --format: invalid choice: 'json'"),
        (("sweep", "--betas", "0"), "the following arguments are required: --out"),
        (("demo", "--seeds", "0"), "argument --seeds: must be an integer >= 1, got 0"),
        (("demo", "--train-pairs", "0"), "argument --train-pairs: must be an integer >= 1, got 0"),
        (("demo", "--heldout-pairs", "0"), "argument --heldout-pairs: must be an integer >= 1, got 0"),
        (("demo", "--steps", "0"), "argument --steps: must be an integer >= 1, got 0"),
        (("demo", "--steps", "2.5"), "argument --steps: must be an integer, got '2.5'"),
        (("compare", "--seeds", "-3"), "argument --seeds: must be an integer >= 1, got -3"),
        (("compare", "--steps", "0"), "argument --steps: must be an integer >= 1, got 0"),
    ],
)
def test_a_bad_argument_is_one_line_and_status_2(capsys, tmp_path, argv, message):
    if argv[0] == "sweep" and "--betas" in argv and "required" not in message:
        argv = (*argv, "--out", str(tmp_path / "out"))
    code, out, err = cli(capsys, *argv)
    assert_one_line_error(code, err, argv[0], message)
    assert out == ""
    assert not (tmp_path / "out").exists(), "nothing is created for a command that never ran"


@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_out_naming_an_existing_file_is_refused(capsys, tmp_path, command):
    existing = tmp_path / "results.txt"
    existing.write_text("mine")
    argv = ["--betas", "0"] if command == "sweep" else []
    code, _, err = cli(capsys, command, *argv, "--out", str(existing))
    assert_one_line_error(code, err, command, f"argument --out: '{existing}' exists and is not a directory")
    assert existing.read_text() == "mine"


def test_out_that_cannot_be_created_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = cli(capsys, *SMALL_SWEEP, "--out", str(tmp_path / "file" / "below"))
    assert_one_line_error(code, err, "sweep", "argument --out: cannot create")


def test_a_grid_too_big_for_memory_is_the_librarys_one_line_error(capsys, tmp_path):
    code, _, err = cli(capsys, "sweep", "--betas", "0", "--seeds", "2", "--steps", str(10**15), "--quiet",
                       "--out", str(tmp_path))
    assert_one_line_error(code, err, "sweep", "max_memory")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [ValueError("lr must be > 0, got -1.0"), TypeError("w must be a dict, got list")])
def test_errors_the_library_raises_are_one_line_and_status_2(capsys, tmp_path, monkeypatch, error):
    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(rl, "sweep_rlhf", refuse)
    code, _, err = cli(capsys, *SMALL_SWEEP, "--out", str(tmp_path))
    assert_one_line_error(code, err, "sweep", str(error))


def test_a_run_that_fails_is_one_line_and_status_1(capsys, tmp_path, monkeypatch):
    def diverge(*args, **kwargs):
        raise FloatingPointError("train_rlhf diverged at step 3: logits overflowed (lr=1e+300, beta=0.0)")

    monkeypatch.setattr(rl, "train_rlhf", diverge)
    code, _, err = cli(capsys, "demo", "--seeds", "1", "--steps", "10", "--quiet")
    assert code == 1
    assert err == "python -m rlhf_fast demo: error: train_rlhf diverged at step 3: logits overflowed " \
                  "(lr=1e+300, beta=0.0)\n"


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rl, "train_rlhf", interrupt)
    code, _, err = cli(capsys, "demo", "--seeds", "1", "--steps", "10", "--quiet")
    assert (code, err) == (130, "python -m rlhf_fast demo: interrupted\n")


def test_a_shell_sees_one_line_status_2_and_no_traceback(tmp_path):
    done = shell("demo", "--seeds", "0")
    assert done.returncode == 2
    assert done.stderr == "python -m rlhf_fast demo: error: argument --seeds: must be an integer >= 1, got 0\n"
    assert done.stdout == ""


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """``... | head``: the pipe's reader closes before the command writes; no message, no
    traceback, status 141 as for a tool that SIGPIPE stops."""
    command = [sys.executable, "-m", "rlhf_fast", "demo", "--seeds", "1", "--steps", "10", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (141, "")


def test_version():
    done = shell("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"rlhf_fast {rl.__version__}\n", "")


def test_help_explains_every_flag():
    done = shell("sweep", "--help")
    for flag in ("--betas", "--seeds", "--steps", "--out", "--format", "--eps", "--lr", "--ppo-epochs", "--kl-ctl",
                 "--target", "--horizon", "--record-every", "--threads", "--train-pairs", "--exact", "--quiet"):
        assert flag in done.stdout


# -------------------------------------------------------------------- files written whole


def test_an_interrupted_write_leaves_no_output(capsys, tmp_path, monkeypatch):
    import pyarrow.parquet

    class Interrupted(pyarrow.parquet.ParquetWriter):
        def write_table(self, table, *args, **kwargs):
            super().write_table(table.slice(0, 10), *args, **kwargs)
            raise KeyboardInterrupt

    monkeypatch.setattr(pyarrow.parquet, "ParquetWriter", Interrupted)
    code, _, err = cli(capsys, *SMALL_SWEEP, "--format", "csv", "parquet", "--out", str(tmp_path))
    assert (code, err) == (130, "python -m rlhf_fast sweep: interrupted\n")
    assert list(tmp_path.iterdir()) == [], "no summary, history or plot, whole or partial, is left"


def test_a_failed_plot_leaves_no_output_and_keeps_the_previous_runs(capsys, tmp_path, monkeypatch):
    code, _, _ = cli(capsys, *SMALL_SWEEP, "--out", str(tmp_path))
    assert code == 0
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert set(before) == {"summary.csv", "history.parquet", "sweep.png"}

    def disk_full(self, path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rl.SweepResult, "plot", disk_full)
    code, _, err = cli(capsys, "sweep", "--betas", "1", "--seeds", "2", "--steps", "30", "--quiet",
                       "--out", str(tmp_path))
    assert (code, err) == (1, "python -m rlhf_fast sweep: error: [Errno 28] No space left on device\n")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def _expected_history(result: rl.SweepResult) -> dict[str, list]:
    """The long table's columns from the SweepResult's arrays, independently of to_arrow()."""
    n_runs, kept = len(result.axes["beta"]) * len(result.axes["seed"]), len(result.steps)
    columns = {
        "beta": np.repeat(np.repeat(result.axes["beta"], len(result.axes["seed"])), kept),
        "seed": np.repeat(np.tile(result.axes["seed"], len(result.axes["beta"])), kept),
        "step": np.tile(result.steps, n_runs),
    }
    for name in result.fields:
        values = getattr(result, name).reshape(-1)
        columns[name] = [PROMPTS[i] for i in values] if name == "prompt" else (
            [VOCAB[i] for i in values] if name == "token" else values)
    return columns


def test_parquet_and_csv_hold_the_sweeps_arrays(capsys, tmp_path):
    import pyarrow.parquet

    code, _, _ = cli(capsys, *SMALL_SWEEP, "--record-every", "2", "--format", "parquet", "csv", "--out", str(tmp_path))
    assert code == 0
    w = rl.train_rm(rl.make_dataset(500, 0), epochs=5, lr=0.1)
    expected = _expected_history(rl.sweep_rlhf(w, betas=[0.0, 0.5], seeds=3, steps=40, record_every=2))

    parquet = pyarrow.parquet.read_table(tmp_path / "history.parquet")
    assert parquet.column_names == list(expected)
    assert parquet.num_rows == 2 * 3 * 20
    with (tmp_path / "history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(expected)
    for name, values in expected.items():
        if isinstance(values, list):  # prompt, token: strings
            assert parquet.column(name).to_pylist() == values
            assert [row[name] for row in rows] == values
        else:  # exactly the same floats: Parquet stores them, the CSV writes the shortest round-trip text
            np.testing.assert_array_equal(parquet.column(name).to_numpy(), values, err_msg=name)
            np.testing.assert_array_equal(np.array([float(row[name]) for row in rows]), values, err_msg=name)


def test_to_arrow_is_the_long_table_of_to_pandas():
    pd = pytest.importorskip("pandas")
    w = rl.train_rm(rl.make_dataset(100, 0))
    for result in (
        rl.sweep_rlhf(w, betas=[0.0, 0.5], seeds=2, steps=30, kl_penalty=["k1", "k3"]),  # an axis named like a field
        rl.sweep_dpo(rl.make_dataset(20, 0), betas=[0.1], seeds=2, epochs=[1, 2], w=w),  # padding: null prompts
        rl.sweep_best_of_n(w, ns=[1, 4], seeds=2, samples=10),
        rl.sweep_rm(rl.make_dataset(50, 0), lrs=[0.1, 0.2], epochs=2, heldout=rl.make_dataset(10, 1)),
    ):
        table = result.to_arrow()
        pd.testing.assert_frame_equal(table.to_pandas(), result.to_pandas())
        if result.fields:
            assert str(table.schema.field("prompt").type) == "dictionary<values=string, indices=int8, ordered=0>"


@pytest.mark.parametrize("max_rows", [1, 59, 60, 61, 10**6])
def test_arrow_batches_are_whole_runs_that_make_the_table(max_rows):
    pa = pytest.importorskip("pyarrow")
    w = rl.train_rm(rl.make_dataset(100, 0))
    result = rl.sweep_rlhf(w, betas=[0.0, 0.5], seeds=3, steps=30, kl_penalty=["k1", "k3"])
    pieces = list(result.to_arrow_batches(max_rows=max_rows))
    per_piece = max(1, max_rows // 30) * 30
    assert [p.num_rows for p in pieces[:-1]] == [per_piece] * (len(pieces) - 1)
    assert pa.concat_tables(pieces).equals(result.to_arrow())


def test_to_arrow_does_not_import_pandas():
    """pyarrow.array() would, costing the B1 command half a second."""
    script = ("import sys, rlhf_fast as rl; w = rl.train_rm(rl.make_dataset(50, 0)); "
              "rl.sweep_rlhf(w, betas=[0.0], seeds=2, steps=10).to_arrow(); print('pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"


def test_the_cli_saves_its_plots_without_pyplot(tmp_path):
    """Importing pyplot and its backends would be a sixth of the B1 command."""
    script = ("import sys; from rlhf_fast.__main__ import main; "
              f"main(['sweep', '--betas', '0', '--seeds', '2', '--steps', '20', '--out', {str(tmp_path / 's')!r}, '--quiet']); "
              f"main(['compare', '--seeds', '1', '--steps', '10', '--out', {str(tmp_path / 'c')!r}, '--quiet']); "
              "print('matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False"
    assert (tmp_path / "s" / "sweep.png").exists() and (tmp_path / "c" / "compare.png").exists()


def test_record_every_0_writes_the_summary_alone(capsys, tmp_path):
    code, out, _ = cli(capsys, *SMALL_SWEEP, "--record-every", "0", "--out", str(tmp_path))
    assert code == 0
    assert [path.name for path in tmp_path.iterdir()] == ["summary.csv"]
    assert f"wrote {tmp_path / 'summary.csv'} in" in out


@rust_only  # the reference takes 20 s for these files; the small tests check them on both backends
def test_the_b1_sweep_command_writes_its_files(tmp_path):
    import pyarrow.parquet

    done = shell("sweep", "--betas", "0", "0.1", "1", "--seeds", "100", "--steps", "2000", "--out", str(tmp_path),
                 "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "final E[score]" in done.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.parquet", "summary.csv", "sweep.png"]
    metadata = pyarrow.parquet.read_metadata(tmp_path / "history.parquet")
    assert metadata.num_rows == 3 * 100 * 2000
    with (tmp_path / "summary.csv").open(newline="") as f:
        assert [float(row["beta"]) for row in csv.DictReader(f)] == [0.0, 0.1, 1.0]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------- progress and runs


@pytest.mark.parametrize(
    ("argv", "bar"),
    [(("demo", "--seeds", "2", "--steps", "50"), "PPO-RLHF"),
     (("sweep", "--betas", "0", "--seeds", "2", "--steps", "50"), "sweep (ppo)"),
     (("compare", "--seeds", "1", "--steps", "20"), "compare")],
)
def test_a_progress_bar_on_stderr_unless_quiet(capsys, tmp_path, argv, bar):
    out = ("--out", str(tmp_path)) if argv[0] != "demo" else ()
    code, _, err = cli(capsys, *argv, *out)
    assert code == 0 and bar in err
    code, _, err = cli(capsys, *argv, *out, "--quiet")
    assert (code, err) == (0, "")


def test_demo_reports_accuracy_on_pairs_of_unseen_bags(capsys):
    code, out, err = cli(capsys, "demo", "--seeds", "2", "--steps", "100", "--quiet")
    assert code == 0 and err == ""
    assert "reward model: 500 pairs, 5 epochs, lr 0.1 -> held-out accuracy 1.000 on 100 pairs" in out
    assert "held-out bags, never in training: clear kind, kind specific, specific thorough (chosen)" in out
    assert "KL alarms" in out


def test_compare_writes_its_table_and_plot(capsys, tmp_path):
    code, out, _ = cli(capsys, "compare", "--seeds", "2", "--steps", "50", "--out", str(tmp_path), "--quiet")
    assert code == 0
    assert "held-out: 1000 pairs whose bags occur in no training pair" in out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["compare.csv", "compare.png"]
    with (tmp_path / "compare.csv").open(newline="") as f:
        assert {row["method"] for row in csv.DictReader(f)} == {"PPO", "DPO", "GRPO", "Best-of-N"}


# ------------------------------------------------------------------------- held-out split


def bags(pairs) -> set[tuple[str, ...]]:
    return {response_bag(y) for _, chosen, rejected in pairs for y in (chosen, rejected)}


@pytest.mark.parametrize(("n_train", "n_heldout", "seed"), [(500, 100, 0), (500, 1000, 0), (40, 7, 12345), (1, 1, 3)])
def test_heldout_pairs_share_no_bag_with_training(n_train, n_heldout, seed):
    train, heldout = heldout_split(n_train, n_heldout, seed)
    assert (len(train), len(heldout)) == (n_train, n_heldout)
    assert not bags(train) & bags(heldout)
    assert bags(heldout) <= HELDOUT_BAGS
    # Every good response is preferred to every bad one, as in the lesson.
    for x, chosen, rejected in train + heldout:
        assert x in PROMPTS and set(chosen.split()) <= set(GOOD_WORDS) and set(rejected.split()) <= set(BAD_WORDS)


def test_heldout_words_all_occur_in_training():
    train, heldout = heldout_split(500, 100)
    words = {word for bag in bags(train) for word in bag}
    assert words == set(VOCAB)
    assert {word for bag in bags(heldout) for word in bag} <= words
    # All 20 bags of the lesson's world are on one side or the other: 7 + 7 train, 3 + 3 held out.
    assert len(bags(train)) == 14 and bags(heldout) == HELDOUT_BAGS


def test_heldout_split_is_the_lesson_stream_filtered():
    train, heldout = heldout_split(500, 100)
    assert heldout_split(50, 10) == (train[:50], heldout[:10])
    kept = [(x, chosen, rejected) for x, chosen, rejected in rl.make_dataset(2000, 0)
            if not {response_bag(chosen), response_bag(rejected)} & HELDOUT_BAGS]
    assert train == kept[:500]


def test_lesson_heldout_set_would_measure_recall():
    """Why the split exists: the lesson's held-out set repeats its training bags."""
    lesson_train = {(response_bag(c), response_bag(r)) for _, c, r in rl.make_dataset(500, 0)}
    repeated = sum((response_bag(c), response_bag(r)) in lesson_train for _, c, r in rl.make_dataset(100, 1))
    assert repeated == 99
