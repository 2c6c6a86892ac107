"""Reading tool calls out of model answers: native, <tool_call> blocks, fenced JSON, repairs, and exact errors."""
import json

import pytest

from loopcoder.agent.plan import PlanBook
from loopcoder.agent.toolcalls import check_calls, parse_answer
from loopcoder.tools.registry import ToolRegistry
from loopcoder.tools.toolbox import Toolbox


@pytest.fixture
def registries(tmp_path):
    tb = Toolbox(workspace=tmp_path)
    write_plan, update_plan = PlanBook().tools()
    read_only = tb.registry.subset(n for n, t in tb.registry.tools.items() if t.read_only)
    planner = ToolRegistry([*read_only.tools.values(), write_plan])
    executor = ToolRegistry([*tb.registry.tools.values(), update_plan])
    return planner, executor, [*tb.registry.names, "write_plan", "update_plan"]


def parsed(content, native=(), registry=None, all_tools=(), phase="executor"):
    answer = parse_answer(content, list(native), "c")
    if registry is not None:
        check_calls(answer, registry, list(all_tools), phase)
    return answer


def test_native_calls_come_first_and_keep_their_ids(registries):
    _, executor, names = registries
    native = [{"id": "call_9", "type": "function", "function": {"name": "view", "arguments": '{"path": "a.py"}'}}]
    a = parsed('<tool_call>{"name": "search", "arguments": {}}</tool_call>', native, executor, names)
    [call] = a.calls
    assert (call.id, call.name, call.arguments, call.source, call.ok) == ("call_9", "view", {"path": "a.py"}, "native", True)


def test_several_tool_call_blocks_in_text_are_all_read_in_order(registries):
    _, executor, names = registries
    a = parsed('I will look.\n<tool_call>\n{"name": "view", "arguments": {"path": "a.py"}}\n</tool_call>\n'
               '<tool_call>\n{"name": "search", "arguments": {"pattern": "median"}}\n</tool_call>', (),
               executor, names)
    assert [(c.name, c.source, c.ok) for c in a.calls] == [("view", "tag", True), ("search", "tag", True)]
    assert [c.id for c in a.calls] == ["c_0", "c_1"]
    assert a.text == "I will look."


def test_unclosed_last_block_counts_when_its_json_is_complete(registries):
    a = parsed('<tool_call>\n{"name": "view", "arguments": {"path": "a.py"}}')
    assert a.calls[0].name == "view" and not a.calls[0].repaired


def test_fenced_json_is_a_call_and_fenced_code_is_not():
    a = parsed('Let me look:\n```json\n{"name": "view", "arguments": {"path": "x"}}\n```\n')
    assert [(c.name, c.source) for c in a.calls] == [("view", "fenced")]
    code = parsed("Here is code:\n```python\nprint(1)\n```\nand JSON data:\n```json\n{\"a\": 1}\n```")
    assert code.calls == []


def test_a_bare_json_object_answer_is_a_call():
    a = parsed('{"name": "view", "parameters": {"path": "x"}}')
    assert (a.calls[0].name, a.calls[0].arguments, a.calls[0].source) == ("view", {"path": "x"}, "json")


@pytest.mark.parametrize("text, arguments", [
    ("{'name': 'view', 'arguments': {'path': 'a.py'}}", {"path": "a.py"}),  # single quotes
    ('{"name": "view", "arguments": {"path": "a.py",},}', {"path": "a.py"}),  # trailing commas
    ('{"name": "view", "arguments": {"path": "a.py"}', {"path": "a.py"}),  # a closing brace missing
])
def test_near_json_is_repaired_and_marked(text, arguments):
    [call] = parsed(f"<tool_call>{text}</tool_call>").calls
    assert (call.name, call.arguments, call.repaired, call.ok) == ("view", arguments, True, True)


def test_bad_json_gets_the_exact_parser_error_and_stays_in_the_text():
    block = '<tool_call>{"name": "view" "arguments": [}</tool_call>'
    a = parsed("x " + block)
    [call] = a.calls
    try:
        json.loads('{"name": "view" "arguments": [}')
    except json.JSONDecodeError as exc:
        expected = f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
    assert call.unreadable and not call.ok
    assert call.error == f"the tool call is not valid JSON: {expected}"
    assert block in a.text  # the model sees what it wrote next to the error


def test_missing_name_is_an_error():
    [call] = parsed('<tool_call>{"arguments": {"path": "a.py"}}</tool_call>').calls
    assert call.unreadable and 'has no "name"' in call.error


def test_native_call_with_broken_arguments_is_unreadable_with_the_parser_error():
    native = [{"id": "x", "type": "function", "function": {"name": "view", "arguments": "path = a.py"}}]
    [call] = parsed(None, native).calls
    assert call.unreadable and call.error.startswith("arguments of view are not valid JSON: Expecting value")


def test_arguments_sent_as_a_json_string_are_decoded():
    [call] = parsed('<tool_call>{"name": "view", "arguments": "{\\"path\\": \\"a.py\\"}"}</tool_call>').calls
    assert call.arguments == {"path": "a.py"} and call.ok


def test_unknown_tool_lists_the_available_ones(registries):
    _, executor, names = registries
    [call] = parsed('<tool_call>{"name": "open_file", "arguments": {}}</tool_call>', (), executor, names).calls
    assert call.error.startswith("unknown tool 'open_file'; available tools: repo_map, ")
    assert not call.unreadable  # well-formed: it goes back as a call, answered with the error


def test_wrong_argument_types_and_unknown_arguments_are_named(registries):
    _, executor, names = registries
    a = parsed('<tool_call>{"name": "view", "arguments": {"path": ["a.py"], "colour": 1}}</tool_call>', (),
               executor, names)
    error = a.calls[0].error
    assert error.startswith("bad arguments for view: path: Input should be a valid string")
    assert "unknown argument 'colour'" in error
    missing = parsed('<tool_call>{"name": "str_replace", "arguments": {"path": "a.py"}}</tool_call>', (),
                     executor, names)
    assert "missing required argument 'old_str'" in missing.calls[0].error


def test_the_planner_is_refused_write_tools_by_name(registries):
    planner, _, names = registries
    a = parsed('<tool_call>{"name": "str_replace", "arguments": {"path": "a", "old_str": "x", "new_str": "y"}}'
               '</tool_call>', (), planner, names, phase="planner")
    assert a.calls[0].error.startswith("str_replace is not available in the planner phase (it may change files)")
    assert "write_plan" in a.calls[0].error and "str_replace" not in planner.names


def test_plain_text_has_no_call():
    assert parsed("I think the bug is in median.").calls == []
