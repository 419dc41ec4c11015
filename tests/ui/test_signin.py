"""The dashboard's own token under ``AppTest``: with one set, a visitor sees only the sign-in
form until they enter it; a wrong one shows an error and nothing of the app."""

from __future__ import annotations


def sign_in(at, token: str):
    at.text_input(key="signin-token").input(token)
    at.button[0].click().run()  # the form's submit button, the only button on the page
    return at


def shows_nothing_of_the_app(at, seeded) -> bool:
    text = " ".join(e.value for kind in (at.markdown, at.caption, at.title) for e in kind)
    no_ids = seeded.search_id not in text and seeded.running_id not in text
    return no_ids and not at.dataframe and not at.metric and not at.selectbox


def test_without_a_token_the_app_is_as_before(app, seeded):
    at = app(seeded.url)
    assert not at.text_input  # no sign-in form
    assert seeded.search_id in set(at.dataframe[0].value["id"])


def test_with_a_token_a_visitor_sees_only_the_form(app, seeded):
    at = app(seeded.url, search=seeded.search_id, token="s3cret")
    assert at.title[0].value == "winnow: sign in"
    assert at.text_input(key="signin-token").label == "dashboard token"
    assert shows_nothing_of_the_app(at, seeded) and not at.error


def test_a_wrong_token_shows_an_error_and_nothing_else(app, seeded):
    at = sign_in(app(seeded.url, search=seeded.search_id, token="s3cret"), "s3cre")
    assert [e.value for e in at.error] == ["wrong token"]
    assert shows_nothing_of_the_app(at, seeded)
    assert "winnow-ui-token" not in at.session_state


def test_the_right_token_opens_the_pages_for_the_session(app, seeded):
    at = sign_in(app(seeded.url, token="s3cret"), "s3cret")
    assert not at.error and not at.text_input  # the form is gone
    assert seeded.search_id in set(at.dataframe[0].value["id"])
    at.selectbox(key="open-search").select(seeded.search_id)
    at.button[0].click().run()  # a second run of the session: still signed in
    assert at.title[0].value.startswith("Search ")
