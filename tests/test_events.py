"""The webhook parser on Meta-shaped payloads: every inbound type, inferred types, senders, partial batches."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import orjson
import pytest

from bot.whatsapp.events import (
    CONTENT_TYPES,
    ChoiceReply,
    Edit,
    FlowReply,
    Order,
    OrderItem,
    PayloadError,
    Revoke,
    SystemNotice,
    TemplateStatusUpdate,
    message_detail,
    parse_webhook,
)
from tests.fakes.meta import contact, inbound_message, load_sample_json, webhook

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database


def only_message(sample: str) -> Any:
    batch = parse_webhook(load_sample_json(sample))
    assert batch.skipped == []
    assert len(batch.messages) == 1
    return batch.messages[0]


def test_edit_carries_the_edited_wamid_and_the_new_text() -> None:
    msg = only_message("edit")
    assert msg.type == "edit"
    assert msg.detail == Edit("wamid.TEST_IN_TEXT_0001", "text", "Vorrei due borse rosse, non una")
    assert msg.text == "Vorrei due borse rosse, non una"
    assert msg.customer_id == "IT.1000000000000000001"


def test_edit_falls_back_to_the_context_id() -> None:
    item = inbound_message("wamid.E2", "393330000000", "edit", {"message": {"type": "text", "text": {"body": "new"}}},
                           context={"from": "393330000000", "id": "wamid.ORIGINAL"})
    msg = parse_webhook(webhook({"messages": [item]})).messages[0]
    assert msg.detail == Edit("wamid.ORIGINAL", "text", "new")
    assert msg.context_wamid == "wamid.ORIGINAL"


def test_an_edit_of_an_edit_is_not_descended() -> None:
    inner = {"type": "edit", "edit": {"message": {"type": "text", "text": {"body": "deep"}}}}
    item = inbound_message("wamid.E3", "393330000000", "edit", {"original_message_id": "wamid.O", "message": inner})
    msg = parse_webhook(webhook({"messages": [item]})).messages[0]
    assert msg.detail == Edit("wamid.O", "edit", None)


def test_revoke_names_the_deleted_message() -> None:
    msg = only_message("revoke")
    assert (msg.type, msg.text) == ("revoke", None)
    assert msg.detail == Revoke("wamid.TEST_IN_TEXT_0001")


def test_system_number_change_gives_the_new_wa_id() -> None:
    msg = only_message("system_changed_number")
    assert msg.type == "system"
    assert msg.customer_id == "393330000000"  # the old number: the conversation that moves
    notice = msg.detail
    assert isinstance(notice, SystemNotice)
    assert (notice.kind, notice.new_wa_id) == ("customer_changed_number", "393330000009")
    assert notice.number_changed and not notice.identity_changed
    assert msg.text == notice.body and notice.body is not None and "changed from" in notice.body


def test_system_number_change_in_the_v11_shape_and_the_user_shape() -> None:
    old = inbound_message("wamid.S1", "393330000000", "system",
                          {"body": "changed", "wa_id": "393330000009", "type": "user_changed_number"})
    bsuid = inbound_message("wamid.S2", "393330000000", "system", {
        "body": "changed", "new_user_id": "IT.1000000000000000009", "type": "user_changed_user_id"})
    first, second = parse_webhook(webhook({"messages": [old, bsuid]})).messages
    assert first.detail == SystemNotice("user_changed_number", "changed", new_wa_id="393330000009")
    assert isinstance(second.detail, SystemNotice) and second.detail.number_changed
    assert second.detail.new_user_id == "IT.1000000000000000009"


def test_system_identity_change() -> None:
    notice = only_message("system_identity_changed").detail
    assert isinstance(notice, SystemNotice)
    assert notice.kind == "customer_identity_changed"
    assert notice.identity_changed and not notice.number_changed
    assert notice.new_wa_id is None


def test_order_items_prices_and_text() -> None:
    msg = only_message("order")
    assert msg.type == "order"
    assert msg.text == "Consegna sabato mattina, grazie"
    assert msg.detail == Order(
        "1000000000000099",
        (OrderItem("BAG-RED-30", 2, Decimal("89.0"), "EUR"), OrderItem("WALLET-BLK", 1, Decimal("24.50"), "EUR")),
        "Consegna sabato mattina, grazie",
    )
    assert isinstance(msg.detail, Order)
    assert msg.detail.lines() == [("BAG-RED-30", 2), ("WALLET-BLK", 1)]


def test_order_lines_meta_could_not_send_are_dropped_not_the_cart() -> None:
    items = [
        {"product_retailer_id": "OK-1", "quantity": 3, "item_price": "x", "currency": "eur"},
        {"product_retailer_id": "ZERO", "quantity": 0, "item_price": 1, "currency": "EUR"},
        {"quantity": 1},
        "not an item",
        {"product_retailer_id": "NEG", "quantity": 1, "item_price": -5, "currency": "EUR"},
    ]
    item = inbound_message("wamid.O2", "393330000000", "order", {"catalog_id": 77, "product_items": items})
    order = parse_webhook(webhook({"messages": [item]})).messages[0].detail
    assert order == Order("77", (OrderItem("OK-1", 3, None, "EUR"), OrderItem("NEG", 1, None, "EUR")), None)


def test_flow_reply_becomes_field_value_text_without_the_token() -> None:
    msg = only_message("flow_reply")
    assert msg.type == "interactive"
    flow = msg.detail
    assert isinstance(flow, FlowReply)
    assert flow.name == "flow" and flow.body == "Sent"
    assert dict(flow.fields) == {"appointment_date": "2026-01-10", "time_slot": "10:00",
                                 "services": "cut, colour", "newsletter": "yes"}
    assert msg.text == "appointment_date: 2026-01-10\ntime_slot: 10:00\nservices: cut, colour\nnewsletter: yes"
    assert "FLOW-TOKEN" not in (msg.text or "")
    assert msg.context_wamid == "wamid.TEST_OUT_FLOW_0001"


def test_flow_reply_with_unreadable_json_keeps_the_body() -> None:
    reply = {"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{not json"}}
    nested = {"type": "nfm_reply", "nfm_reply": {"response_json": orjson.dumps(
        {"flow_token": "t", "address": {"city": "Roma", "zip": "00100"}}).decode()}}
    first, second = parse_webhook(webhook({"messages": [
        inbound_message("wamid.F2", "393330000000", "interactive", reply),
        inbound_message("wamid.F3", "393330000000", "interactive", nested),
    ]})).messages
    assert first.detail == FlowReply("flow", "Sent", ())
    assert first.text == "Sent"
    assert second.text == "address.city: Roma\naddress.zip: 00100"


def test_button_and_list_replies_keep_id_and_title() -> None:
    button = only_message("interactive_button_reply")
    assert button.detail == ChoiceReply("button_reply", "confirm-order", "Conferma")
    assert button.text == "Conferma"
    row = only_message("interactive_list_reply")
    assert row.detail == ChoiceReply("list_reply", "product-sku-001", "Borsa rossa", "Pelle, 30 cm")
    assert row.context_wamid == "wamid.TEST_OUT_0003"
    quick = only_message("button_template_reply")
    assert quick.detail == ChoiceReply("button", "STOP_PROMOTIONS", "Stop promotions")
    assert row.detail.as_model_text() == "the customer chose Borsa rossa (product-sku-001)"
    assert ChoiceReply("button", "Yes", "Yes").as_model_text() == "the customer chose Yes"


@pytest.mark.parametrize("sample, kind", [("location_no_type", "location"), ("contacts_no_type", "contacts")])
def test_metas_examples_without_a_type(sample: str, kind: str) -> None:
    msg = only_message(sample)
    assert msg.type == kind
    assert msg.profile_name == "Test User"


@pytest.mark.parametrize("kind", CONTENT_TYPES)
def test_every_type_is_inferred_from_its_object(kind: str) -> None:
    content: Any = [{"name": {"formatted_name": "A"}}] if kind == "contacts" else {"body": "x"}
    item = {"from": "393330000000", "id": f"wamid.INFER.{kind}", "timestamp": "1767225600", kind: content}
    msg = parse_webhook(webhook({"messages": [item]})).messages[0]
    assert msg.type == kind


def test_no_type_and_no_known_object_is_unknown() -> None:
    item = {"from": "393330000000", "id": "wamid.UNK", "timestamp": "1767225600", "poll": {"q": "?"}}
    assert parse_webhook(webhook({"messages": [item]})).messages[0].type == "unknown"


def test_sender_only_in_contacts_user_id() -> None:
    msg = only_message("text_contact_user_id_only")
    assert (msg.customer_id, msg.user_id, msg.wa_id) == ("IT.1000000000000000003", "IT.1000000000000000003", None)
    assert msg.profile_name == "Username Tester"
    assert msg.text == "Siete aperti domenica?"


def test_sender_completed_from_the_matching_contact() -> None:
    item = inbound_message("wamid.P1", "393330000000", "text", {"body": "ciao"})
    people = [contact("393330000001", "Other", "IT.1000000000000000002"),
              contact("393330000000", "Test User", "IT.1000000000000000001")]
    msg = parse_webhook(webhook({"contacts": people, "messages": [item]})).messages[0]
    assert (msg.wa_id, msg.user_id, msg.customer_id) == ("393330000000", "IT.1000000000000000001",
                                                        "IT.1000000000000000001")
    assert msg.profile_name == "Test User"


def test_no_sender_and_two_contacts_is_skipped_with_its_reason() -> None:
    good = inbound_message("wamid.G1", "393330000000", "text", {"body": "ok"})
    orphan = inbound_message("wamid.G2", None, "text", {"body": "whose?"})
    people = [contact("393330000000"), contact("393330000001")]
    batch = parse_webhook(webhook({"contacts": people, "messages": [good, orphan]}))
    assert [m.wamid for m in batch.messages] == ["wamid.G1"]
    assert len(batch.skipped) == 1
    where, why = batch.skipped[0]
    assert where == "entry[0].changes[0].messages[1]"
    assert "sender" in why


def test_a_change_without_metadata_costs_only_itself() -> None:
    batch = parse_webhook(load_sample_json("mixed_missing_metadata"))
    assert [m.wamid for m in batch.messages] == ["wamid.TEST_IN_MIXED_0001"]
    assert batch.skipped == [("entry[0].changes[1]", "value.metadata.phone_number_id is missing")]


def test_bad_items_beside_good_ones_are_reported_one_by_one() -> None:
    payload = load_sample_json("text")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"].append({"from": "393330000000", "type": "text"})  # no id
    value["messages"].append(7)
    value["statuses"] = [{"id": "wamid.X"}, {"id": "wamid.OUT", "status": "read", "recipient_id": "393330000000"}]
    payload["entry"].append("junk")
    payload["entry"].append({"changes": "nope"})
    batch = parse_webhook(payload)
    assert len(batch.messages) == 1 and [s.wamid for s in batch.statuses] == ["wamid.OUT"]
    assert [where for where, _ in batch.skipped] == [
        "entry[0].changes[0].messages[1]", "entry[0].changes[0].messages[2]", "entry[0].changes[0].statuses[0]",
        "entry[1]", "entry[2]",
    ]
    assert all(why for _, why in batch.skipped)


def test_nothing_readable_is_a_payload_error_but_an_unhandled_field_is_not() -> None:
    broken = copy.deepcopy(load_sample_json("mixed_missing_metadata"))
    del broken["entry"][0]["changes"][0]["value"]["metadata"]
    with pytest.raises(PayloadError, match="nothing in it could be read"):
        parse_webhook(broken)
    other_field = {"object": "whatsapp_business_account",
                   "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"event": "X"}}]}]}
    batch = parse_webhook(other_field)
    assert (batch.messages, batch.skipped) == ([], [])
    assert parse_webhook({"object": "whatsapp_business_account", "entry": []}).skipped == []


def test_template_status_updates() -> None:
    approved = parse_webhook(load_sample_json("template_status_approved"))
    assert approved.template_updates == [
        TemplateStatusUpdate("100000000000000", "1000000000000101", "order_ready", "it", "APPROVED", None)
    ]
    assert approved.messages == [] and approved.skipped == []
    rejected = parse_webhook(load_sample_json("template_status_rejected")).template_updates[0]
    assert (rejected.event, rejected.reason, rejected.language) == ("REJECTED", "INCORRECT_CATEGORY", "en_US")


def test_template_paused_reason_and_a_malformed_update() -> None:
    paused = {"event": "PAUSED", "message_template_id": 5, "message_template_name": "promo",
              "message_template_language": "it", "reason": None,
              "other_info": {"title": "FIRST_PAUSE", "description": "Paused for 3 hours: low quality"}}
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "9", "changes": [
        {"field": "message_template_status_update", "value": paused},
        {"field": "message_template_status_update", "value": {"message_template_name": "no_event"}},
    ]}]}
    batch = parse_webhook(payload)
    assert batch.template_updates == [TemplateStatusUpdate("9", "5", "promo", "it", "PAUSED",
                                                           "Paused for 3 hours: low quality")]
    assert [w for w, _ in batch.skipped] == ["entry[0].changes[1]"]


def test_echo_edit_still_reads_its_new_text() -> None:
    echo = parse_webhook(load_sample_json("smb_echo_edit")).echoes[0]
    assert echo.type == "edit" and echo.text == "Ciao, ti rispondo io (messaggio corretto)"


@pytest.mark.parametrize("sample", ["edit", "revoke", "system_changed_number", "order", "flow_reply",
                                    "interactive_list_reply"])
def test_the_detail_can_be_read_again_from_the_stored_payload(sample: str) -> None:
    msg = only_message(sample)
    stored = orjson.loads(orjson.dumps(msg.payload))  # what the inbox keeps
    assert msg.detail is not None
    assert message_detail(stored) == msg.detail
