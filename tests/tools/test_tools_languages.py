"""Definitions, references, outline and repo-map ranking for each supported language on small real sources."""
import pytest
from tools_lang_samples import SAMPLES

from loopcoder.tools.languages import LANGUAGES, get_query, language_for
from loopcoder.tools.tags import extract_tags

LANGS = sorted(SAMPLES)


def line_of(source: str, text: str) -> int:
    for n, line in enumerate(source.splitlines(), 1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in source")


def test_the_ten_swe_bench_multilingual_languages_have_samples_and_queries():
    assert set(LANGS) == {"python", "javascript", "typescript", "java", "go", "rust", "c", "cpp", "ruby", "php"}
    for lang in LANGUAGES:
        get_query(lang)  # compiles against the shipped grammar


@pytest.mark.parametrize("lang", LANGS)
def test_definitions_have_name_kind_and_line(lang):
    s = SAMPLES[lang]
    assert language_for(s.store) == lang
    source = s.files[s.store]
    defs = {(d.name, d.kind, d.start_line) for d in extract_tags(source.encode(), lang).defs}
    for name, kind, marker in s.defs:
        assert (name, kind, line_of(source, marker)) in defs, (name, kind, sorted(defs))


@pytest.mark.parametrize("lang", LANGS)
def test_references_count_calls_of_the_other_files_symbols(lang):
    s = SAMPLES[lang]
    refs = extract_tags(s.files[s.app].encode(), lang).refs
    for name in (s.func, s.method, s.helper):
        assert refs[name] >= 1, (name, dict(refs))
    store_refs = extract_tags(s.files[s.store].encode(), lang).refs
    assert store_refs[s.helper] >= 1
    assert s.method not in store_refs  # its own definition is not a reference


@pytest.mark.parametrize("lang", LANGS)
def test_find_references_lists_code_uses_not_comments_strings_or_the_definition(lang, make_toolbox):
    s = SAMPLES[lang]
    tb = make_toolbox(s.files)
    res = tb.registry.call("find_references", {"symbol": s.method})
    assert res.ok, res.output
    got = [(loc.path, loc.line) for loc in res.data.locations]
    call = {"php": f"store->{s.method}(", "c": f"{s.method}(store"}.get(lang, f"store.{s.method}(")
    assert got == [(s.app, line_of(s.files[s.app], call))]


@pytest.mark.parametrize("lang", LANGS)
def test_find_definition_locates_the_method(lang, make_toolbox):
    s = SAMPLES[lang]
    tb = make_toolbox(s.files)
    res = tb.registry.call("find_definition", {"symbol": s.method})
    assert res.ok, res.output
    marker = next(m for n, _, m in s.defs if n == s.method)
    locs = [(loc.path, loc.line) for loc in res.data.locations if loc.kind not in ("prototype",)]
    assert (s.store, line_of(s.files[s.store], marker)) in locs
    if s.qualified:
        res = tb.registry.call("find_definition", {"symbol": s.qualified})
        assert [(loc.path, loc.container) for loc in res.data.locations] == [(s.store, s.cls)], res.output
        res = tb.registry.call("find_definition", {"symbol": f"NoSuchClass.{s.method}"})
        assert res.ok and res.data.locations == []


@pytest.mark.parametrize("lang", LANGS)
def test_outline_nests_methods_under_their_class(lang, make_toolbox):
    s = SAMPLES[lang]
    tb = make_toolbox(s.files)
    res = tb.registry.call("outline", {"path": s.store})
    assert res.ok, res.output
    assert [(it.name, it.depth) for it in res.data.items] == s.outline, res.output


@pytest.mark.parametrize("lang", LANGS)
def test_repo_map_puts_the_file_defining_a_mentioned_symbol_first(lang, make_toolbox):
    s = SAMPLES[lang]
    tb = make_toolbox(s.files)
    plain = tb.registry.call("repo_map", {})
    assert plain.ok, plain.output
    # Control: unpersonalised, the helper everyone calls wins, so the next assertion can fail.
    assert plain.data.top_files[0] != s.store, plain.output
    res = tb.registry.call("repo_map", {"mentioned_symbols": [s.method]})
    assert res.data.top_files[0] == s.store, res.output
    first_file = res.data.text.splitlines()[0]
    assert first_file == f"{s.store}:"
    marker = next(m for n, _, m in s.defs if n == s.method)
    assert marker in res.output


@pytest.mark.parametrize("lang", LANGS)
def test_every_common_definition_form_is_found(lang):
    from tools_lang_samples import CONSTRUCTS

    name, source, expected = CONSTRUCTS[lang]
    assert language_for(name) == lang
    found = {d.name for d in extract_tags(source.encode(), lang).defs}
    assert sorted(set(expected) - found) == []
