"""The layers of the code import downwards only (docs/architecture.md, docs/import-graph.png):
bench/'s contract <- evaluation <- execution <- reporting <- cli; nothing in bench/ imports engine/,
methods/ or tools/ (the registry loads those by their package's name); engine/ imports no method;
methods/ imports no tool. Read from the import statements (tools/import_graph.py), nothing is run."""
from tools.import_graph import edges, layer_of

ORDER = ["contract", "evaluation", "execution", "reporting", "cli"]


def test_plumbing_imports_only_the_layers_below():
    counts = edges()
    assert counts, "no imports found: the graph reader is broken"
    for (src, dst), n in counts.items():
        if src in ORDER:
            assert dst in ORDER, f"bench's {src} imports {dst} ({n} modules): plumbing never imports a definition"
            assert ORDER.index(dst) < ORDER.index(src), f"{src} imports {dst}, a layer above it"


def test_definitions_do_not_import_tools_and_the_engine_no_method():
    counts = edges()
    assert ("methods", "engine") in counts  # the methods do train with the engine (the reader works)
    assert not any(src in ("methods", "engine") and dst in ("tools", "reporting", "cli") for src, dst in counts)
    assert ("engine", "methods") not in counts


def test_every_module_belongs_to_a_layer():
    assert layer_of("bench.execution.runner") == "execution" and layer_of("bench.commands") == "cli"
    assert layer_of("methods.advae.model") == "methods" and layer_of("numpy") is None
