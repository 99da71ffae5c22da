"""The command line: version/help and the demo job end to end (in-process runner)."""

import json

from click.testing import CliRunner

from ntkscale.cli.main import cli


def test_version_and_help():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "version" in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "demo" in r.output


def test_demo_job_and_info(tmp_path):
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "run"), "--n", "600", "--depth", "2",
                                 "--client", "sync"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{"):])
    assert rep["n"] == 600 and rep["computed"] == rep["tiles"] >= 1
    assert rep["max_rel_error_vs_dense_rows"] < 1e-6  # float32 storage
    r2 = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "run"), "--n", "600", "--depth", "2",
                                  "--client", "sync"])
    assert json.loads(r2.output[r2.output.index("{"):])["computed"] == 0  # resumed, nothing to do
    r3 = CliRunner().invoke(cli, ["info", str(tmp_path / "run" / "gram.zarr")])
    assert r3.exit_code == 0 and json.loads(r3.output)["complete"] is True
