"""The dashboard's own token: with ``$WINNOW_UI_TOKEN`` set (``winnow ui --ui-token``), a
visitor sees only a sign-in form until they enter it; the token they entered is kept in
``st.session_state``, so it is asked once per browser session.

The token is not accepted as a ``?token=`` query parameter: a URL ends up in the browser's
history, in proxies' and Streamlit's access logs, in ``Referer`` headers and in shared
screenshots, so a token in it would leak to whoever reads those.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

from winnow.service import env

KEY = "winnow-ui-token"  # where the session keeps the token its visitor entered


def expected() -> str | None:
    """The token visitors must enter, or None when the dashboard has none."""
    return os.environ.get(env.UI_TOKEN) or None


def _matches(given: str, token: str) -> bool:
    # Constant time, as the server compares its bearer token: no timing hints to a guesser.
    return hmac.compare_digest(given.encode(), token.encode())


def signed_in() -> bool:
    """True when the dashboard has no token or this session entered it; otherwise draws the
    sign-in form (and an error after a wrong token) and returns False: the caller draws
    nothing else."""
    token = expected()
    if token is None or _matches(st.session_state.get(KEY, ""), token):
        return True
    st.title("winnow: sign in")
    with st.form("signin"):
        given = st.text_input("dashboard token", type="password", key="signin-token")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if _matches(given, token):
            st.session_state[KEY] = given
            st.rerun()  # draw the page asked for, now signed in
        st.error("wrong token")
    return False
