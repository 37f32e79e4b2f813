import pytest

from agentlm.agent.profiles import ProfileError, available_profiles, load_profile


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
