"""The dashboard's Streamlit script: ``winnow ui`` runs it with ``streamlit run``; tests run
it with ``AppTest.from_file``. It routes by query parameters (see ``nav``; the Compare page
first), once the visitor has signed in (``signin``) where the dashboard has a token."""

from __future__ import annotations

import streamlit as st

from winnow.ui import nav, page_compare, page_search, page_searches, page_trial, signin

st.set_page_config(page_title="winnow", page_icon="🌾", layout="wide")
if not signin.signed_in():  # a dashboard token is set and this visitor has not entered it
    st.stop()
search_id, trial = nav.current()
if nav.compared():
    page_compare.render(nav.compared())
elif search_id is None:
    page_searches.render()
elif trial is None:
    page_search.render(search_id)
else:
    page_trial.render(search_id, trial)
