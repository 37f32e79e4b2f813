import pytest

from agentlm.agent.actions import PARSERS, FinalAnswer
from agentlm.agent.databases.hr import build_hr_database
from agentlm.agent.databases.scheduling import build_scheduling_database
from agentlm.agent.profiles import ProfileError, available_profiles, load_profile
from agentlm.agent.trajectory import ToolCall


def test_bundled_profiles_load_with_their_required_parts():
    assert "hr-assistant" in available_profiles()
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.id == name
        assert "{schema}" in profile.instruction  # the schema is filled in at run time
        assert "Action: Operation" in profile.instruction and "Final Answer" in profile.instruction


def test_unknown_profile_names_the_choices():
    with pytest.raises(ProfileError, match="hr-assistant"):
        load_profile("nope")


def test_invalid_profile_file_says_what_is_wrong(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("id: x\ntitle: X\n")
    with pytest.raises(ProfileError, match="description"):
        load_profile(str(path))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_hr_database(tmp_path_factory.mktemp("profiles") / "hr.duckdb")


def test_opening_messages_are_the_instruction_with_the_schema_then_ok(db):
    profile = load_profile("hr-assistant").with_database(db)
    try:
        instruction, ok, *shot = profile.opening_messages()
    finally:
        profile.sql_tool.close()
    assert instruction["role"] == "user" and ok == {"role": "assistant", "content": "Ok."}
    assert shot == profile.one_shot and shot[0]["role"] == "user" and shot[-1]["role"] == "assistant"
    assert (
        "{schema}" not in instruction["content"] and instruction["content"] == instruction["content"].rstrip()
    )
    assert instruction["content"].endswith(profile.sql_tool.schema().splitlines()[-1])
    assert "CREATE TABLE leave_balances" in instruction["content"]


def test_with_database_points_a_fresh_tool_at_the_new_file(db, tmp_path):
    original = load_profile("hr-assistant").with_database(tmp_path / "old.duckdb")
    _ = original.sql_tool  # cached on first use
    moved = original.with_database(db)
    assert moved.sql_tool is not original.sql_tool and moved.sql_tool.database == db
    assert moved.model_dump(exclude={"database"}) == original.model_dump(exclude={"database"})
    moved.sql_tool.close()


def test_the_sample_database_is_built_under_agentlm_home(agentlm_home):
    profile = load_profile("hr-assistant")
    assert profile.database == "hr"
    assert profile.database_path() == agentlm_home / "hr.duckdb" and (agentlm_home / "hr.duckdb").is_file()


def test_a_profile_file_with_a_database_path(tmp_path, db):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"id: mine\ntitle: Mine\ndescription: d\ndatabase: {db}\ninstruction: 'Tables: {{schema}}'\n"
    )
    profile = load_profile(str(path))
    try:
        assert profile.database_path() == db and profile.max_rounds == 15
        assert profile.opening_messages()[0]["content"].startswith("Tables: CREATE TABLE departments")
    finally:
        profile.sql_tool.close()


@pytest.mark.parametrize("name", available_profiles())
def test_one_shot_observations_are_what_the_sample_database_returns(name, tmp_path):
    """The worked example must not teach the model a result the database would not give."""
    profile = load_profile(name)
    assert profile.one_shot, f"{name} needs a 1-shot example"
    build = {"hr": build_hr_database, "scheduling": build_scheduling_database}[profile.database]
    profile = profile.with_database(build(tmp_path / f"{profile.database}.duckdb"))
    parse = PARSERS[profile.protocol]
    try:
        shot = profile.one_shot
        for reply, observation in zip(shot[1::2], shot[2::2], strict=False):
            action = parse(reply["content"], repair=False).action
            assert isinstance(action, ToolCall), reply["content"]
            assert observation["content"] == profile.sql_tool.invoke(action.input)
        assert isinstance(parse(shot[-1]["content"], repair=False).action, FinalAnswer)
    finally:
        profile.sql_tool.close()


def test_the_assistants_write_to_scratch_copies_per_run(tmp_path, db):
    """Bookings (scheduling) and leave requests (HR) wait for approval on a copy of their own run."""
    for profile in (
        load_profile("scheduling-assistant").with_database(build_scheduling_database(tmp_path / "s.duckdb")),
        load_profile("hr-assistant").with_database(db),
    ):
        try:
            first, second = profile.setup("a"), profile.setup("b")
            assert first.tools["sql"] is not second.tools["sql"]  # runs never share pending writes
            assert first.owned_tools == [first.tools["sql"]] and first.tools["sql"].writes == "scratch"
            first.close()
            second.close()
        finally:
            profile.sql_tool.close()


def test_a_profile_that_cannot_write_shares_one_read_only_tool(tmp_path, db):
    path = tmp_path / "ro.yaml"
    path.write_text(f"id: ro\ntitle: RO\ndescription: d\ndatabase: {db}\ninstruction: 'Tables: {{schema}}'\n")
    profile = load_profile(str(path))
    try:
        setup = profile.setup("c")
        assert setup.tools["sql"] is profile.sql_tool and setup.owned_tools == []  # read-only, shared
    finally:
        profile.sql_tool.close()


def test_a_langchain_tool_plugs_in_by_import_path(tmp_path, db):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"id: calc\ntitle: Calc\ndescription: d\nprotocol: tools\ndatabase: {db}\n"
        "instruction: 'Tables: {schema}'\ntools: [sql, 'langchain_core.tools:tool']\n"
    )
    with pytest.raises(ProfileError, match="not a langchain-core BaseTool"):
        load_profile(str(path)).setup("x")
    tools_module = tmp_path / "my_tools.py"
    tools_module.write_text(
        "from langchain_core.tools import tool\n\n@tool\ndef add(a: int, b: int) -> int:\n"
        '    """Add two integers."""\n    return a + b\n'
    )
    path.write_text(path.read_text().replace("langchain_core.tools:tool", "my_tools:add"))
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        profile = load_profile(str(path))
        setup = profile.setup("x")
        assert set(setup.tools) == {"sql", "add"} and setup.tools["add"].invoke({"a": 2, "b": 3}) == 5
        profile.sql_tool.close()
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("tools: [sql, bash]\n", "protocol: db speaks SQL only"),
        ("protocol: tools\ntools: [sql, telnet]\n", "unknown tool 'telnet'"),
        ("one_shot: [{role: assistant, content: hi}]\n", "one_shot must start with the user"),
        ("writes: always\n", "writes"),
    ],
)
def test_profile_mistakes_are_named(tmp_path, db, extra, message):
    path = tmp_path / "p.yaml"
    path.write_text(f"id: x\ntitle: X\ndescription: d\ndatabase: {db}\ninstruction: i\n{extra}")
    with pytest.raises(ProfileError, match=message):
        load_profile(str(path))


def test_the_system_prompt_is_a_setting_rendered_by_the_checkpoints_template(db):
    from agentlm.data.templates import AGENTLM_SYSTEM_PROMPT, get_template

    llama2 = get_template("llama-2")
    base = load_profile("hr-assistant").with_database(db)
    try:
        default = base.opening_messages()
        assert default[0]["role"] == "user"  # unset: the template supplies the model card's prompt
        assert AGENTLM_SYSTEM_PROMPT in llama2.render_prompt(default)
        for setting, shown in (("", None), ("Answer in French.", "Answer in French.")):
            profile = base.model_validate({**base.model_dump(), "system_prompt": setting})
            opening = profile.opening_messages()
            assert opening[0] == {"role": "system", "content": setting} and opening[1:] == default
            rendered = llama2.render_prompt(opening)
            assert AGENTLM_SYSTEM_PROMPT not in rendered
            assert ("<<SYS>>" in rendered) == (shown is not None)
            profile.sql_tool.close()
    finally:
        base.sql_tool.close()
