"""CLI: build-graph and stats run through register() as kgvlp's main CLI would."""
import argparse
import json

from knowledge.cli import register


def run(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="knowledge_cmd", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_build_graph_then_stats(tmp_path, capsys):
    out = tmp_path / "g.jsonl.gz"

    run(["build-graph", "--out", str(out)])
    run(["stats", str(out)])

    stats = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert stats["concepts"] > 200
