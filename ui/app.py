"""The AgentLM web UI: the assistant, the stored runs, the review queue and the model history.

It talks to the AgentLM API only (the sidebar's API URL and key, from AGENTLM_API_URL and
AGENTLM_API_KEY), so it works against any deployment. Run it with `agentlm ui`, or
`streamlit run ui/app.py`. This file is the entry: the sidebar and the navigation; each page is
its own file beside it, run by Streamlit as a script.

    Assistant      (/)              chat with an agent, approve its database changes, rate answers
    Trajectories   (/trajectories)  every stored run, filtered and paged, with its steps and charts
    Review         (/review)        thumbs-down runs waiting for a correction
    Models         (/models)        the checkpoint promotion history and each candidate's eval
"""

from __future__ import annotations

import streamlit as st

from agentlm.ui.render import connection_sidebar

# (file beside this one, title, url path); the first is the default page, at the app's root.
PAGES = [
    ("chat.py", "Assistant", None),
    ("trajectories.py", "Trajectories", "trajectories"),
    ("review.py", "Review", "review"),
    ("models.py", "Models", "models"),
]


def main() -> None:
    pages = [
        st.Page(path, title=title, url_path=url_path, default=url_path is None)
        for path, title, url_path in PAGES
    ]
    page = st.navigation(pages)
    # The chat reads best narrow; the tables and charts of the other pages need the width.
    wide = page.title != "Assistant"
    title = "AgentLM assistant" if not wide else f"AgentLM · {page.title}"
    st.set_page_config(page_title=title, page_icon="🤖", layout="wide" if wide else "centered")
    connection_sidebar()
    page.run()


if __name__ == "__main__":  # Streamlit runs the entry file as __main__
    main()
