"""Cut an OpenVINO model at a trunk's boundary tensors: (before, trunk, after).

OpenVINO's CPU plugin applies ``INFERENCE_PRECISION_HINT`` to a whole compiled model and ignores
per-node "keep FP32" marks, so running only a stage's convolutional trunk in BF16 means compiling
the trunk as a model of its own (ov_engine.OvEngine compiles the three parts and runs them back
to back in one ``infer``). Needs openvino; imported only by an engine that cuts.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple


def split_at_trunk(model, prefix: str) -> List[Tuple[Any, bool, Dict[str, str]]]:
    """Cut an ``openvino.Model`` into (before, trunk, after) at the trunk's boundary tensors:
    [(model, runs in bf16, {input name: name of the value it takes})]. The trunk is
    :func:`trunk_nodes`; only tensors computed from the inputs are cut (constant subgraphs are
    copied into every part that uses them). Each part is a clone of the graph with Parameters in
    place of the tensors it receives and Results for the ones it hands on; a cut tensor is named
    ``NODE#PORT`` in every part (intermediate tensors may have no name). A graph without the trunk
    comes back whole: [(model, False, ...)]."""
    import openvino as ov
    import openvino.opset13 as ops

    trunk_names, dynamic = trunk_nodes(model, prefix)
    in_trunk = lambda node: node.get_friendly_name() in trunk_names  # noqa: E731

    def boundary(graph, into: bool) -> List[Tuple[str, Any, List[Any]]]:
        """[(key, source port, its consumers across the boundary)] into / out of the trunk."""
        cuts = []
        for node in graph.get_ordered_ops():
            if node.get_friendly_name() not in dynamic or node.get_type_name() in ("Parameter", "Result") \
                    or in_trunk(node) == into:
                continue
            for port in node.outputs():
                users = [t for t in port.get_target_inputs()
                         if t.get_node().get_type_name() != "Result" and in_trunk(t.get_node()) == into]
                if users:
                    cuts.append((f"{node.get_friendly_name()}#{port.get_index()}", port, users))
        return cuts

    def results(cuts) -> List[Any]:
        out = []
        for key, port, _ in cuts:
            port.add_names({key}) if hasattr(port, "add_names") else port.set_names(port.get_names() | {key})
            out.append(ops.result(port))
        return out

    def parameters(graph, cuts) -> List[Any]:
        made = []
        for key, port, users in cuts:
            param = ops.parameter(port.get_partial_shape(), port.get_element_type(), name=key)
            param.output(0).set_names({key})
            for user in users:
                user.replace_source_output(param.output(0))
            made.append(param)
        graph.add_parameters(made)
        return made

    same = lambda m: {p.output(0).get_any_name(): p.output(0).get_any_name() for p in m.get_parameters()}  # noqa: E731
    before, trunk, after = model.clone(), model.clone(), model.clone()
    ins, outs = boundary(before, into=True), boundary(after, into=False)
    if not ins or not outs:
        return [(model, False, same(model))]
    head = ov.Model(results(ins), before.get_parameters(), "before_trunk")
    trunk_outs = results(boundary(trunk, into=False))
    body = ov.Model(trunk_outs, parameters(trunk, boundary(trunk, into=True)), "trunk")
    parameters(after, outs)
    tail = ov.Model(after.get_results(), after.get_parameters(), "after_trunk")
    return [(head, False, same(head)), (body, True, same(body)), (tail, False, same(tail))]


def trunk_nodes(model, prefix: str) -> Tuple[set, set]:
    """(names of the trunk's nodes, names of the nodes whose outputs may be cut: computed from a
    Parameter, not through a shape of a trunk tensor). The trunk: every node named ``prefix...``
    and every node computed from the inputs that lies between two of them (downstream of one,
    upstream of another: the unnamed nodes OpenVINO's import makes inside it, e.g. a BatchNorm's
    multiply and add), plus an INT8 graph's FakeQuantize nodes that feed only it."""
    ops = model.get_ordered_ops()
    name = lambda node: node.get_friendly_name()  # noqa: E731
    users = {name(n): {name(t.get_node()) for port in n.outputs() for t in port.get_target_inputs()} for n in ops}
    sources = {name(n): {name(i.get_source_output().get_node()) for i in n.inputs()} for n in ops}
    dynamic, shapes = set(), set()
    for node in ops:        # a ShapeOf's output is a shape (static rank): copied like a constant, never cut
        if node.get_type_name() == "Parameter" or sources[name(node)] & (dynamic - shapes):
            dynamic.add(name(node))
            if node.get_type_name() == "ShapeOf":
                shapes.add(name(node))
    named = {name(n) for n in ops if name(n).startswith(prefix)}

    def reach(start: set, edges: Dict[str, set]) -> set:
        seen, stack = set(), list(start)
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    between = reach(named, users) & reach(named, sources) & (dynamic - shapes)
    trunk = named | {n for n in between if n in users}
    trunk |= {name(n) for n in ops if n.get_type_name() == "FakeQuantize" and users[name(n)]
              and users[name(n)] <= trunk}
    for node in ops:        # in topological order: a ShapeOf of a ShapeOf of a trunk tensor joins too
        if node.get_type_name() == "ShapeOf" and sources[name(node)] <= trunk:
            trunk.add(name(node))
    # shapes of tensors outside the trunk (and what is computed from them) reach it as cut tensors
    outside = shapes - trunk
    shape_users = {n: {u for u in us if u not in dynamic} for n, us in users.items()}
    return trunk, (dynamic - shapes) | outside | reach(outside, shape_users)
