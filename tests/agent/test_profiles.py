import pytest

from agentlm.agent.profiles import ProfileError, available_profiles, load_profile
from agentlm.data.hr import build_hr_database


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
        instruction, ok = profile.opening_messages()
    finally:
        profile.sql_tool.close()
    assert instruction["role"] == "user" and ok == {"role": "assistant", "content": "Ok."}
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
