#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_hub and fuzz_rest (corpus/<target>/) from the readable programs below.

A program is what the target's world::step() reads: a configuration byte, then operations with their
operands. Every byte is written as a printable character with the same meaning (operands are taken
modulo the size of their set), so the seeds stay text. Keep the operation numbers, sets and operand
order in step with fuzz_hub.cpp and fuzz_rest.cpp. Inputs named regression_* are kept.
Run: python3 tests/fuzz/make_corpus.py
"""
import os
import sys

OPS = {'open': 0, 'close': 2, 'auth': 3, 'cmd': 5, 'upd': 8, 'adv': 11, 'tick': 12, 'process': 13,
       'reading': 14, 'rotate': 15, 'raw': 16, 'multi': 17}
OP_COUNT = 18

# Indices into fuzz_hub.cpp's sets.
PRINCIPALS = ['backend-1', 'backend-2', 'backend-3', 'agent-1', 'agent-2', 'agent-3', 'ghost-c', 'ghost-a']
REQUESTS = ['r1', 'r2', 'r3', 'r:4']
AGENTS = ['agent-1', 'agent-2', 'agent-3', 'ghost-a', 'backend-1']
COMMANDERS = ['backend-1', 'backend-2', 'backend-3', 'ghost-c', 'agent-1']
KEYS = {'current': 0, 'first': 1, 'other': 2, 'wrong': 3, 'prefix': 4, 'suffix': 5}
# auth variant (mod 8): 0 well-formed, 3 token, 4 no key, 5 key+token, 6 reordered, 7 trailing {}.
# 0x30 set: the other role; 0x20 without 0x10: a reauth; 8 set: the id's first character escaped.
CMDS = {'deploy': 0, 'status': 1, 'deploy_low': 2, 'create_high': 3, 'bad_payload': 4, 'unknown_op': 5,
        'forged_commander': 6, 'no_agent': 7, 'dup_key': 8, 'truncated': 9, 'update': 10, 'v2': 11,
        'delete': 12, 'no_payload': 13}
UPDS = {'progress': 0, 'result': 2, 'failed': 3, 'error': 4, 'progress_agent': 5, 'no_commander': 6,
        'bad_percent': 7, 'bare_progress': 8, 'presence': 9}
STEPS = {'100ms': 0, '1s': 1, '2s': 2, '4s': 3, '11s': 4, '65s': 5}


def byte(value, modulo):
    """A printable byte (preferring letters and digits) equal to value modulo `modulo`, if there is one."""
    value %= modulo
    for b in list(range(0x30, 0x7b)) + list(range(0x20, 0x30)) + [0x7b, 0x7c, 0x7d, 0x7e]:
        if b % modulo == value:
            return b
    return value  # no printable byte has this meaning (a short length): the value itself


class Program:
    def __init__(self, config=0):
        # config bits: 1 queued (process by hand), 2 small outbound limits, 4 in-flight cap 2,
        # 8 rate limits, 16 three strikes, 32 inbound queue of 3
        self.out = bytearray([0x40 | config])

    def op(self, name):
        self.out.append(byte(OPS[name], OP_COUNT))
        return self

    def open(self, slot):
        self.op('open').out.append(byte(slot, 6))
        return self

    def close(self, slot):
        self.op('close').out.append(byte(slot, 6))
        return self

    def auth(self, slot, principal, key='current', variant=0x40):
        self.op('auth').out += bytes([byte(slot, 6), byte(PRINCIPALS.index(principal), 8), byte(KEYS[key], 6)])
        self.out.append(variant)
        return self

    def reauth(self, slot, principal, key='current', form=0):  # the session lifetime is 30 s
        return self.auth(slot, principal, key, 0x60 | form)

    def cmd(self, slot, request, agent, kind='deploy'):
        self.op('cmd').out += bytes([byte(slot, 6), byte(REQUESTS.index(request), 4), byte(AGENTS.index(agent), 5),
                                     byte(CMDS[kind], 14)])
        return self

    def upd(self, slot, request, commander, kind='progress', percent=50):
        self.op('upd').out += bytes([byte(slot, 6), byte(REQUESTS.index(request), 4),
                                     byte(COMMANDERS.index(commander), 5), byte(UPDS[kind], 10), byte(percent, 101)])
        return self

    def adv(self, step):
        self.op('adv').out.append(byte(STEPS[step], 6))
        return self

    def tick(self):
        return self.op('tick')

    def process(self, budget=0):  # 0: everything
        self.op('process').out.append(byte(budget, 4))
        return self

    def reading(self, slot, on):
        self.op('reading').out.append(next(b for b in range(0x20, 0x7f) if b % 6 == slot and bool(b & 0x40) != on))
        return self

    def rotate(self, principal, overlap_index):  # overlaps: 0 s, 1 s, 5 s, 60 s
        b = next(b for b in range(0x20, 0x7f) if b % 8 == PRINCIPALS.index(principal) and (b >> 3) % 4 == overlap_index)
        self.op('rotate').out.append(b)
        return self

    def raw(self, slot, text):
        data = text.encode()
        assert 32 <= len(data) < 127, 'a raw frame is 32..126 bytes here (its length byte stays printable)'
        self.op('raw').out += bytes([byte(slot, 6), byte(len(data), 128)]) + data
        return self

    def multi(self, slot, count, frame):  # frame: ('cmd', request, agent, kind) or ('upd', request, commander, kind, percent)
        self.op('multi').out += bytes([byte(slot, 6), byte(count - 2, 6)])
        if frame[0] == 'cmd':
            self.out.append(byte(1, 2))
            _, request, agent, kind = frame
            self.out += bytes([byte(REQUESTS.index(request), 4), byte(AGENTS.index(agent), 5), byte(CMDS[kind], 14)])
        else:
            self.out.append(byte(0, 2))
            _, request, commander, kind, percent = frame
            self.out += bytes([byte(REQUESTS.index(request), 4), byte(COMMANDERS.index(commander), 5),
                               byte(UPDS[kind], 10), byte(percent, 101)])
        return self

    # The usual cast: commanders on slots 0 and 1, agents on 2 and 3.
    def cast(self):
        return (self.open(0).auth(0, 'backend-1').open(1).auth(1, 'backend-2')
                .open(2).auth(2, 'agent-1').open(3).auth(3, 'agent-2'))


def hub_programs():
    p = {}
    p['route_progress_result'] = Program().cast().cmd(0, 'r1', 'agent-1').upd(2, 'r1', 'backend-1', 'progress', 40) \
        .upd(2, 'r1', 'backend-1', 'result')
    p['route_all_ops'] = Program().cast().cmd(0, 'r1', 'agent-1', 'status').cmd(0, 'r2', 'agent-2', 'create_high') \
        .cmd(0, 'r3', 'agent-1', 'update').cmd(0, 'r:4', 'agent-2', 'delete').upd(2, 'r1', 'backend-1', 'result') \
        .upd(3, 'r2', 'backend-1', 'failed').upd(2, 'r3', 'backend-1', 'error').upd(3, 'r:4', 'backend-1', 'result')
    p['forged_commander_id'] = Program().cast().cmd(0, 'r1', 'agent-1').upd(2, 'r1', 'backend-2', 'result') \
        .upd(3, 'r1', 'backend-1', 'result').cmd(0, 'r2', 'agent-1', 'forged_commander')
    p['impersonation'] = Program().cast().cmd(0, 'r1', 'agent-2').upd(2, 'r1', 'backend-1', 'progress_agent') \
        .upd(3, 'r1', 'backend-1', 'progress_agent')
    p['agents_command_commanders_update'] = Program().cast().cmd(2, 'r1', 'agent-2').upd(0, 'r1', 'backend-1', 'result') \
        .upd(2, 'r1', 'backend-1', 'presence')
    p['grants'] = Program().cast().cmd(1, 'r1', 'agent-2').cmd(0, 'r1', 'agent-3').cmd(0, 'r2', 'ghost-a') \
        .cmd(0, 'r3', 'backend-1').open(4).auth(4, 'agent-3').cmd(0, 'r1', 'agent-3')
    p['invalid_commands'] = Program().cast().cmd(0, 'r1', 'agent-1', 'bad_payload').cmd(0, 'r1', 'agent-1', 'unknown_op') \
        .cmd(0, 'r1', 'agent-1', 'no_agent').cmd(0, 'r1', 'agent-1', 'dup_key').cmd(0, 'r1', 'agent-1', 'truncated') \
        .cmd(0, 'r1', 'agent-1', 'v2').cmd(0, 'r1', 'agent-1', 'no_payload').cmd(0, 'r1', 'agent-1')
    p['invalid_updates'] = Program().cast().cmd(0, 'r1', 'agent-1').upd(2, 'r1', 'backend-1', 'no_commander') \
        .upd(2, 'r1', 'backend-1', 'bad_percent').upd(2, 'r1', 'backend-1', 'bare_progress').upd(2, 'r1', 'backend-1', 'result')
    p['late_updates'] = Program().cast().upd(2, 'r2', 'backend-1', 'result').cmd(0, 'r2', 'agent-1') \
        .upd(2, 'r2', 'backend-1', 'result').upd(2, 'r2', 'backend-1', 'progress').upd(2, 'r2', 'backend-1', 'failed')
    p['agent_offline'] = Program().open(0).auth(0, 'backend-1').cmd(0, 'r1', 'agent-1').open(2).auth(2, 'agent-1') \
        .cmd(0, 'r1', 'agent-1')
    p['agent_disconnects'] = Program().cast().cmd(0, 'r1', 'agent-1').cmd(0, 'r2', 'agent-2').cmd(1, 'r1', 'agent-1') \
        .close(2).upd(3, 'r2', 'backend-1', 'result')
    p['commander_disconnects'] = Program().cast().cmd(0, 'r1', 'agent-1').close(0).upd(2, 'r1', 'backend-1', 'progress') \
        .upd(2, 'r1', 'backend-1', 'result').open(0).auth(0, 'backend-1').cmd(0, 'r1', 'agent-1') \
        .upd(2, 'r1', 'backend-1', 'result')
    p['commander_away_and_back'] = Program().cast().cmd(0, 'r1', 'agent-1').close(0).open(4).auth(4, 'backend-1') \
        .upd(2, 'r1', 'backend-1', 'result').cmd(4, 'r1', 'agent-1')
    p['timeouts'] = Program().cast().cmd(0, 'r1', 'agent-1').cmd(0, 'r2', 'agent-1').adv('4s').adv('4s') \
        .upd(2, 'r2', 'backend-1', 'progress').adv('4s').tick().adv('11s').tick().upd(2, 'r1', 'backend-1', 'result')
    p['replaced_agent'] = Program().cast().cmd(0, 'r1', 'agent-1').open(4).auth(4, 'agent-1') \
        .upd(2, 'r1', 'backend-1', 'result').upd(4, 'r1', 'backend-1', 'result').close(2)
    p['replaced_commander'] = Program().cast().cmd(0, 'r1', 'agent-1').open(4).auth(4, 'backend-1') \
        .upd(2, 'r1', 'backend-1', 'progress').cmd(0, 'r2', 'agent-1').cmd(4, 'r1', 'agent-1').upd(2, 'r1', 'backend-1', 'result')
    p['auth_failures'] = Program().open(0).auth(0, 'backend-1', 'wrong').open(1).auth(1, 'ghost-c') \
        .open(2).auth(2, 'agent-1', 'other').open(3).auth(3, 'agent-2', 'prefix').open(4).auth(4, 'backend-2', 'suffix') \
        .open(5).auth(5, 'agent-1', 'current', 0x43)
    p['auth_variants'] = Program().open(0).auth(0, 'backend-1', 'current', 0x44).auth(0, 'backend-1', 'current', 0x45) \
        .auth(0, 'backend-1', 'current', 0x47).auth(0, 'backend-1', 'current', 0x46).auth(0, 'backend-1') \
        .open(1).auth(1, 'agent-1', 'current', 0x48).open(2).auth(2, 'backend-2', 'current', 0x30) \
        .cmd(0, 'r1', 'agent-1')
    p['auth_twice'] = Program().open(0).auth(0, 'backend-1').auth(0, 'backend-2').auth(0, 'backend-1') \
        .cmd(0, 'r1', 'agent-1')
    p['auth_timeout'] = Program().open(0).adv('2s').tick().open(1).adv('2s').tick().auth(1, 'agent-1').adv('4s').tick() \
        .cmd(0, 'r1', 'agent-1')
    p['unauthenticated'] = Program().open(0).cmd(0, 'r1', 'agent-1').upd(0, 'r1', 'backend-1').multi(0, 7, ('cmd', 'r1', 'agent-1', 'status')) \
        .auth(0, 'backend-1')
    p['rotation'] = Program().rotate('agent-1', 2).open(0).auth(0, 'agent-1', 'first').adv('4s').open(1) \
        .auth(1, 'agent-1', 'first').adv('2s').open(2).auth(2, 'agent-1', 'first').open(3).auth(3, 'agent-1') \
        .rotate('backend-1', 0).open(4).auth(4, 'backend-1', 'first').open(5).auth(5, 'backend-1')
    p['reauth_in_time'] = Program().cast().cmd(0, 'r1', 'agent-1').adv('11s').adv('11s').reauth(2, 'agent-1') \
        .reauth(0, 'backend-1').adv('11s').tick().upd(2, 'r1', 'backend-1', 'progress').adv('11s').tick() \
        .upd(2, 'r1', 'backend-1', 'result').adv('11s').tick().cmd(0, 'r2', 'agent-1')
    p['reauth_refused'] = Program().cast().reauth(2, 'agent-2').reauth(3, 'agent-2', 'wrong') \
        .rotate('backend-1', 0).reauth(0, 'backend-1', 'first').reauth(1, 'backend-2', 'current', 3) \
        .open(4).reauth(4, 'agent-1').open(5).auth(5, 'agent-3').reauth(5, 'agent-3', 'current', 6)
    rotate = '{ "v" : 1 , "type" : "rotate_key" }'
    p['rotate_key'] = Program().cast().cmd(0, 'r1', 'agent-1').raw(2, rotate).raw(2, rotate).reauth(2, 'agent-1') \
        .upd(2, 'r1', 'backend-1', 'progress').raw(2, rotate).adv('4s').adv('2s').reauth(2, 'agent-1', 'first') \
        .raw(0, rotate).reauth(0, 'backend-1').upd(2, 'r1', 'backend-1', 'result')
    p['rotate_key_revoked'] = Program().cast().rotate('agent-2', 0).raw(3, rotate).raw(4, rotate).open(4) \
        .raw(4, rotate).auth(4, 'agent-3').rotate('agent-3', 1).adv('2s').raw(4, rotate).raw(1, rotate) \
        .adv('11s').reauth(1, 'backend-2', 'first')
    p['reauth_overlap'] = Program().cast().cmd(0, 'r1', 'agent-1').rotate('agent-1', 3).reauth(2, 'agent-1', 'first') \
        .reauth(2, 'agent-1').adv('65s').reauth(2, 'agent-1', 'current').reauth(2, 'agent-1', 'first').tick() \
        .upd(2, 'r1', 'backend-1', 'result')
    p['session_expiry'] = Program().cast().cmd(0, 'r1', 'agent-1').adv('11s').open(4).auth(4, 'agent-3').adv('11s') \
        .reauth(1, 'backend-2').adv('11s').tick().cmd(0, 'r2', 'agent-1').cmd(1, 'r2', 'agent-1').adv('11s').tick() \
        .open(0).auth(0, 'backend-1').cmd(0, 'r3', 'agent-3')
    p['presence'] = Program().open(2).auth(2, 'agent-1').open(3).auth(3, 'agent-2').open(4).auth(4, 'agent-3') \
        .open(0).auth(0, 'backend-3').open(1).auth(1, 'backend-2').close(4).close(2).open(2).auth(2, 'agent-1')
    p['wildcard_commander'] = Program().open(2).auth(2, 'agent-3').open(0).auth(0, 'backend-3').cmd(0, 'r1', 'agent-3') \
        .cmd(0, 'r2', 'ghost-a').upd(2, 'r1', 'backend-3', 'result')
    p['duplicates'] = Program().cast().cmd(0, 'r1', 'agent-1').cmd(0, 'r1', 'agent-1').cmd(0, 'r1', 'agent-2') \
        .cmd(1, 'r1', 'agent-1').upd(2, 'r1', 'backend-2', 'result').upd(2, 'r1', 'backend-1', 'result')
    p['in_flight_cap'] = Program(4).cast().cmd(0, 'r1', 'agent-1').cmd(0, 'r2', 'agent-2').cmd(0, 'r3', 'agent-1') \
        .upd(2, 'r1', 'backend-1', 'result').cmd(0, 'r3', 'agent-1').close(3).cmd(0, 'r:4', 'agent-1')
    p['queued_priorities'] = Program(1).cast().cmd(0, 'r1', 'agent-1', 'deploy_low').cmd(0, 'r2', 'agent-1') \
        .cmd(0, 'r3', 'agent-1', 'create_high').cmd(0, 'r:4', 'agent-1', 'status').process(1).process(0) \
        .upd(2, 'r1', 'backend-1', 'progress').upd(2, 'r1', 'backend-1', 'result').process(0)
    p['queued_interleaving'] = Program(1).cast().cmd(0, 'r1', 'agent-1').close(0).process(0) \
        .open(0).auth(0, 'backend-1').cmd(0, 'r1', 'agent-1').process(0).upd(2, 'r1', 'backend-1', 'result') \
        .close(2).process(0).cmd(0, 'r1', 'agent-1').upd(2, 'r1', 'backend-1', 'result').process(0)
    p['queue_full'] = Program(1 | 32).cast().multi(0, 7, ('cmd', 'r1', 'agent-1', 'status')).process(0) \
        .multi(2, 5, ('upd', 'r1', 'backend-1', 'progress', 5)).process(2).process(0)
    p['rate_limits'] = Program(8).cast().multi(0, 7, ('cmd', 'r1', 'agent-1', 'status')).adv('1s') \
        .multi(2, 7, ('upd', 'r1', 'backend-1', 'progress', 9)).open(4).auth(4, 'backend-1') \
        .multi(4, 7, ('cmd', 'r2', 'agent-1', 'status'))
    p['strikes'] = Program(16).cast().multi(0, 4, ('cmd', 'r1', 'agent-1', 'truncated')).cmd(0, 'r1', 'agent-1') \
        .multi(2, 4, ('upd', 'r1', 'backend-1', 'bad_percent', 0))
    p['slow_commander'] = Program(2).cast().cmd(0, 'r1', 'agent-1').reading(0, False) \
        .multi(2, 7, ('upd', 'r1', 'backend-1', 'progress', 10)).multi(2, 7, ('upd', 'r1', 'backend-1', 'progress', 20)) \
        .reading(0, True).upd(2, 'r1', 'backend-1', 'progress', 90).upd(2, 'r1', 'backend-1', 'result')
    p['slow_commander_closed'] = Program(2).cast().reading(0, False).multi(0, 7, ('cmd', 'r1', 'agent-1', 'status')) \
        .cmd(0, 'r2', 'agent-1').cmd(0, 'r3', 'agent-1').cmd(0, 'r:4', 'agent-2').upd(2, 'r2', 'backend-1', 'result') \
        .upd(2, 'r3', 'backend-1', 'failed').upd(3, 'r:4', 'backend-1', 'error').upd(2, 'r1', 'backend-1', 'result')
    p['slow_agent'] = Program(2 | 1).cast().reading(2, False).cmd(0, 'r1', 'agent-1', 'deploy_low') \
        .cmd(0, 'r2', 'agent-1', 'create_high').cmd(0, 'r3', 'agent-1', 'update').cmd(0, 'r:4', 'agent-1', 'deploy_low') \
        .cmd(1, 'r1', 'agent-1', 'update').cmd(1, 'r2', 'agent-1', 'update').process(0).reading(2, True).tick()
    p['raw_frames'] = Program().cast().raw(0, '{"v":1,"type":"command","id":"r1","agent":"agent-1","op":"site.status","payload":{"site_id":3}}') \
        .raw(2, '{"v":1,"type":"result","id":"r1","commanderId":"backend-1","status":"ok"}') \
        .raw(0, '{"v":1,"type":"auth","role":"agent","id":"agent-1","key":"k"}').raw(1, '{}' + ' ' * 30) \
        .raw(3, '\u00e9\u0000 not json, not even close to it')
    p['raw_escaped_ids'] = Program().cast().raw(0, '{"v":1,"type":"command","id":"\\u0072\\u0031","agent":"agent\\u002d1","op":"site.status","payload":{"site_id":3}}') \
        .raw(2, '{"v":1,"type":"progress","id":"r1","commanderId":"b\\u0061ckend-1","step":"x"}') \
        .raw(2, '{"v":1,"type":"result","id":"\\u0072\\u0031","commanderId":"backend-1","status":"ok"}')
    # cancel (#12): on an open route, crossing its result (the agent answers again), with no route (it
    # opens one), overtaking its command in the queue, from another commander, from an agent.
    p['raw_cancel'] = Program().cast().cmd(0, 'r1', 'agent-1').raw(0, '{"v":1,"type":"cancel","id":"r1","agent":"agent-1"}') \
        .upd(2, 'r1', 'backend-1', 'result').upd(2, 'r1', 'backend-1', 'result') \
        .raw(0, '{"v":1,"type":"cancel","id":"r2","agent":"agent-1"}').upd(2, 'r2', 'backend-1', 'failed') \
        .cmd(0, 'r3', 'agent-1').raw(1, '{"v":1,"type":"cancel","id":"r3","agent":"agent-1"}') \
        .raw(2, '{"v":1,"type":"cancel","id":"r3","agent":"agent-1"}') \
        .raw(0, '{"v":1,"type":"cancel","id":"r3","agent":"agent-2","commanderId":"backend-2"}')
    p['raw_cancel_queued'] = Program(1).cast().cmd(0, 'r1', 'agent-1', 'deploy_low') \
        .raw(0, '{"v":1,"type":"cancel","id":"r1","agent":"agent-1"}').process(0) \
        .upd(2, 'r1', 'backend-1', 'failed').process(0).raw(0, '{"v":1,"type":"cancel","id":"r:4","agent":"ghost-a"}') \
        .process(0).tick().adv('65s').tick()
    # The backend's acknowledgement to users is no message for the hub: refused from either side.
    p['raw_accepted'] = Program().cast().raw(0, '{"v":1,"type":"accepted","id":"u1","request":"r1"}') \
        .cmd(0, 'r1', 'agent-1').raw(2, '{"v":1,"type":"accepted","id":"r1","request":"r1","op":"site.deploy"}') \
        .upd(2, 'r1', 'backend-1', 'result')
    p['everything_closes'] = Program(2 | 4 | 8).cast().cmd(0, 'r1', 'agent-1').cmd(1, 'r1', 'agent-1').close(1).close(0) \
        .close(2).close(3).tick().adv('65s').tick().open(0).auth(0, 'backend-1').cmd(0, 'r1', 'agent-1')
    return p


# ------------------------------------------------------------------------------------------ fuzz_rest

REST_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'get', '', 'POST ']
REST_TARGETS = {'healthz': 0, 'metrics': 1, 'login': 2, 'refresh': 3, 'sites': 4, 'site': 5, 'legacy': 7,
                'deploy': 8, 'verify': 10, 'admin_agents': 11, 'rotate': 12, 'admin_commanders': 13,
                'admin_hubs': 14, 'site_query': 15, 'deploy_now': 16, 'double_slash': 17, 'upper': 18, 'empty': 19}
REST_BODIES = {'none': 0, 'login': 1, 'login_wrong': 2, 'login_dup': 3, 'site_new': 4, 'site_bad': 5,
               'rename': 6, 'move': 7, 'empty_object': 8, 'version': 9, 'verify': 10, 'verify_wrong': 11,
               'agent_new': 12, 'overlap': 13, 'overlap_negative': 14, 'overlap_huge': 15, 'commander_new': 16,
               'hub_new': 17, 'truncated': 18, 'array': 19, 'deep': 20, 'long_name': 21, 'verify_new_agent': 22,
               'control_chars': 23}
REST_AUTH = {'none': 0, 'alice': 1, 'bob': 2, 'root': 3, 'expired': 4, 'alice_lower': 5, 'two_tokens': 6,
             'basic': 7, 'hub': 8, 'hub_wrong': 9, 'last': 10, 'new_hub': 11, 'comma': 12}
REST_TYPES = ['application/json', '', 'text/plain', 'application/json; charset=utf-8',
              'APPLICATION/JSON;charset="UTF-8"', 'application/json; charset=latin1', 'application/json;']
# Site ids: 1, 2 alice's; 3, 4 bob's; 5, 6 root's; 7, 8 the next ones created. Odd ones (index into
# fuzz_rest.cpp's list): 999, 0, 01, -1, 2^53+1, 2^53, abc, "", 1.0, %31.
REST_ODD_IDS = ['999', '0', '01', '-1', '9007199254740993', '9007199254740992', 'abc', '', '1.0', '%31']
REST_AGENTS = ['agent-1', 'agent-9', 'a:b', 'bad id', '', 'ghost']
REST_USERS = ['alice', 'bob', 'root']


class RestProgram:
    def __init__(self, config=0):
        self.out = bytearray([0x40 | config])  # config bit 1: per-address rate limit 1/s, burst 3

    def request(self, method, target, auth='none', body='none', site=1, odd_id=None, agent=None, user='alice',
                content_type=0, address=0):
        """`site`: 1..8 (or odd_id: an index of REST_ODD_IDS); `agent`: rotate's agent id; `user`: whose
        password the login bodies carry. The operand p must satisfy all three at once."""
        candidates = range(0x20, 0x7f)
        if odd_id is not None:
            candidates = [b for b in candidates if b % 16 >= 8 and b % 10 == odd_id]
        elif target in ('site', 'legacy', 'deploy', 'site_query', 'deploy_now'):
            candidates = [b for b in candidates if b % 16 < 8 and 1 + b % 8 == site]
        if agent is not None:
            candidates = [b for b in candidates if b % 6 == REST_AGENTS.index(agent)]
        if body in ('login', 'login_wrong', 'login_dup'):
            candidates = [b for b in candidates if b % 3 == REST_USERS.index(user)]
        p = list(candidates)[0]
        x = next(b for b in range(0x20, 0x7f) if b % 7 == content_type and (b >> 3) % 8 == address)
        self.out.append(byte(0, 12))
        self.out += bytes([byte(REST_METHODS.index(method), 9), byte(REST_TARGETS[target], 20), p,
                           byte(REST_BODIES[body], 24), byte(REST_AUTH[auth], 13), x])
        return self

    def advance(self, step):  # 1 + step * 150 seconds (tokens live 900 s)
        self.out += bytes([byte(8, 12), byte(step, 8)])
        return self

    def raw(self, method, target, body, auth='none', content_type=0):
        # one byte: method length (b % 8), content type ((b >> 3) % 7) and client address (b >> 5)
        lengths = next(b for b in list(range(0x20, 0x100)) + list(range(0x20))
                       if b % 8 == len(method) and (b >> 3) % 7 == content_type)
        assert len(target) < 64 and len(body) < 128
        self.out += bytes([byte(9, 12), lengths]) + method.encode()
        self.out += bytes([byte(len(target), 64)]) + target.encode()
        self.out += bytes([byte(len(body), 128)]) + body.encode()
        self.out.append(byte(REST_AUTH[auth], 13))
        return self

    def hub_toggle(self):
        self.out += bytes([byte(10, 12), byte(1, 2)])
        return self

    def update(self, command, kind):  # kind: 0 progress, 1 succeeded, 2 failed
        # The command index is taken modulo the commands sent so far: 48 + index is exact for up to 4, 6, 8 ...
        b = 2 * (48 + command)
        self.out += bytes([byte(10, 12), b, byte(kind, 3)])
        return self

    def fail_writes(self, count):
        self.out += bytes([byte(11, 12), byte(count - 1, 2)])
        return self


def rest_programs():
    R = RestProgram
    p = {}
    p['health_metrics'] = R().request('GET', 'healthz').request('GET', 'metrics').request('POST', 'healthz') \
        .request('get', 'healthz').request('GET', 'empty').request('GET', 'upper').request('GET', 'double_slash')
    p['login_each_user'] = R().request('POST', 'login', body='login', user='alice') \
        .request('POST', 'login', body='login', user='bob').request('POST', 'login', body='login', user='root') \
        .request('GET', 'sites', auth='last')
    p['login_wrong_and_lockout'] = R().request('POST', 'login', body='login_wrong', user='bob') \
        .request('POST', 'login', body='login_wrong', user='bob').request('POST', 'login', body='login_wrong', user='bob') \
        .request('POST', 'login', body='login_wrong', user='bob').request('POST', 'login', body='login_wrong', user='bob') \
        .request('POST', 'login', body='login', user='bob').request('POST', 'login', body='login_dup', user='alice')
    p['refresh'] = R().request('POST', 'refresh', auth='alice').request('POST', 'refresh', auth='last') \
        .request('POST', 'refresh', auth='expired').request('POST', 'refresh').advance(7) \
        .request('POST', 'refresh', auth='last').request('POST', 'refresh', auth='alice', body='empty_object')
    p['own_sites'] = R().request('GET', 'sites', auth='alice').request('POST', 'sites', auth='alice', body='site_new') \
        .request('GET', 'site', auth='alice', site=1).request('PUT', 'site', auth='alice', site=2, body='rename') \
        .request('PUT', 'legacy', auth='alice', site=1, body='move').request('POST', 'deploy', auth='alice', site=1) \
        .request('POST', 'deploy', auth='alice', site=7, body='version').request('DELETE', 'site', auth='alice', site=2) \
        .request('GET', 'site_query', auth='alice', site=1)
    p['other_users_sites'] = R().request('GET', 'site', auth='alice', site=3).request('PUT', 'site', auth='alice', site=4, body='rename') \
        .request('PUT', 'legacy', auth='alice', site=3, body='move').request('POST', 'deploy', auth='alice', site=5) \
        .request('DELETE', 'site', auth='bob', site=1).request('DELETE', 'site', auth='root', site=3) \
        .request('GET', 'site', auth='bob', site=8).request('DELETE', 'site', auth='two_tokens', site=3)
    p['site_ids'] = R().request('GET', 'site', auth='alice', odd_id=0).request('GET', 'site', auth='alice', odd_id=1) \
        .request('GET', 'site', auth='alice', odd_id=2).request('GET', 'site', auth='alice', odd_id=3) \
        .request('GET', 'site', auth='alice', odd_id=4).request('GET', 'site', auth='alice', odd_id=5) \
        .request('GET', 'site', auth='alice', odd_id=6).request('GET', 'site', auth='alice', odd_id=7) \
        .request('GET', 'site', auth='alice', odd_id=8).request('GET', 'site', auth='alice', odd_id=9) \
        .request('POST', 'deploy_now', auth='alice', site=1)
    p['site_input'] = R().request('POST', 'sites', auth='bob', body='site_bad').request('POST', 'sites', auth='bob', body='long_name') \
        .request('POST', 'sites', auth='bob', body='control_chars').request('PUT', 'site', auth='bob', site=3, body='empty_object') \
        .request('POST', 'sites', auth='bob', body='truncated').request('POST', 'sites', auth='bob', body='array') \
        .request('POST', 'sites', auth='bob', body='deep').request('POST', 'sites', auth='bob', body='login')
    p['tokens'] = R().request('GET', 'sites', auth='expired').request('GET', 'sites', auth='alice_lower') \
        .request('GET', 'sites', auth='two_tokens').request('GET', 'sites', auth='basic').request('GET', 'sites', auth='comma') \
        .request('GET', 'sites', auth='hub').advance(7).request('GET', 'sites', auth='alice')
    p['content_types'] = R().request('POST', 'sites', auth='alice', body='site_new', content_type=1) \
        .request('POST', 'sites', auth='alice', body='site_new', content_type=2) \
        .request('POST', 'sites', auth='alice', body='site_new', content_type=3) \
        .request('POST', 'sites', auth='alice', body='site_new', content_type=4) \
        .request('POST', 'sites', auth='alice', body='site_new', content_type=5) \
        .request('POST', 'sites', auth='alice', body='site_new', content_type=6) \
        .request('GET', 'sites', auth='alice', body='site_new').request('GET', 'healthz', body='site_new')
    p['admin'] = R().request('POST', 'admin_agents', auth='alice', body='agent_new') \
        .request('POST', 'admin_agents', auth='root', body='agent_new').request('POST', 'admin_agents', auth='root', body='agent_new') \
        .request('POST', 'admin_commanders', auth='root', body='commander_new').request('POST', 'admin_hubs', auth='root', body='hub_new') \
        .request('POST', 'admin_hubs', auth='bob', body='hub_new').request('POST', 'verify', auth='hub', body='verify_new_agent') \
        .request('POST', 'verify', auth='new_hub', body='verify_new_agent').request('POST', 'verify', auth='new_hub', body='verify') \
        .request('POST', 'admin_commanders', auth='root', body='agent_new')
    p['rotate'] = R().request('POST', 'rotate', auth='root', agent='agent-1', body='overlap') \
        .request('POST', 'verify', auth='hub', body='verify').request('POST', 'verify', auth='hub', body='verify_new_agent') \
        .advance(1).request('POST', 'verify', auth='hub', body='verify') \
        .request('POST', 'rotate', auth='root', agent='agent-1', body='overlap_negative') \
        .request('POST', 'rotate', auth='root', agent='agent-1', body='overlap_huge') \
        .request('POST', 'rotate', auth='root', agent='a:b').request('POST', 'rotate', auth='root', agent='bad id') \
        .request('POST', 'rotate', auth='root', agent='ghost').request('POST', 'rotate', auth='alice', agent='agent-1')
    p['verify_agent'] = R().request('POST', 'verify', body='verify').request('POST', 'verify', auth='hub_wrong', body='verify') \
        .request('POST', 'verify', auth='hub', body='verify').request('POST', 'verify', auth='hub', body='verify_wrong') \
        .request('POST', 'verify', auth='alice', body='verify').request('POST', 'verify', auth='hub', body='verify') \
        .request('POST', 'verify', auth='hub', body='verify').request('POST', 'verify', auth='hub', body='verify') \
        .request('GET', 'verify', auth='hub', body='verify')
    p['rate_limited'] = R(1).request('GET', 'sites', auth='alice').request('GET', 'sites', auth='alice') \
        .request('GET', 'sites', auth='alice').request('GET', 'sites', auth='alice') \
        .request('GET', 'sites', auth='alice', content_type=0, address=2).request('GET', 'healthz') \
        .request('GET', 'sites', auth='alice', address=3).request('GET', 'sites', auth='alice', address=4) \
        .request('GET', 'sites', auth='alice', address=5).request('GET', 'sites', auth='alice', address=6) \
        .request('GET', 'sites', auth='alice', address=7).request('POST', 'verify', auth='hub_wrong', body='verify') \
        .advance(0).request('GET', 'sites', auth='alice')
    p['hub_down_and_updates'] = R().request('POST', 'deploy', auth='alice', site=1).hub_toggle() \
        .request('POST', 'deploy', auth='alice', site=2).request('POST', 'sites', auth='alice', body='site_new').hub_toggle() \
        .request('POST', 'deploy', auth='bob', site=3).update(0, 0).update(0, 1).update(1, 2).update(1, 1) \
        .request('GET', 'sites', auth='alice').request('GET', 'sites', auth='bob')
    p['storage_failures'] = R().fail_writes(1).request('POST', 'sites', auth='alice', body='site_new') \
        .fail_writes(2).request('PUT', 'site', auth='alice', site=1, body='rename').request('DELETE', 'site', auth='alice', site=1) \
        .fail_writes(1).request('POST', 'admin_agents', auth='root', body='agent_new') \
        .fail_writes(1).request('POST', 'login', body='login', user='alice') \
        .request('POST', 'deploy', auth='alice', site=2).fail_writes(1).update(0, 1)
    p['raw_requests'] = R().raw('GET', '/api/sites/1', '', auth='alice').raw('PUT', '/api/sites/3', '{"name":"x"}', auth='alice') \
        .raw('POST', '/api/sites', '{"name":"n","url":"https://n/","name":"m"}', auth='bob') \
        .raw('POST', '/api/login', '{"username":"alice","password":"nope"}') \
        .raw('DELETE', '/api/sites/4?/api/sites/1', '', auth='bob').raw('GET', '/api/sites/%34', '', auth='bob') \
        .raw('POST', '/api/admin/agents/agent-1/rotate', '{"overlapSeconds":1e3}', auth='root')
    p['legacy_path'] = R().request('PUT', 'legacy', auth='bob', site=3, body='rename') \
        .request('GET', 'legacy', auth='bob', site=3).request('PUT', 'legacy', auth='bob', site=1, body='rename') \
        .request('PUT', 'legacy', auth='bob', odd_id=4, body='rename').request('PUT', 'legacy', auth='bob', site=4)
    p['deploy_versions'] = R().request('POST', 'deploy', auth='root', site=5, body='version') \
        .request('POST', 'deploy', auth='root', site=6, body='site_new').request('POST', 'deploy', auth='root', site=5, body='long_name') \
        .request('POST', 'deploy', auth='root', site=5, body='truncated', content_type=2).update(0, 0).update(0, 2) \
        .request('GET', 'site', auth='root', site=5)
    p['admin_bad_bodies'] = R().request('POST', 'admin_agents', auth='root', body='array') \
        .request('POST', 'admin_agents', auth='root', body='deep').request('POST', 'admin_commanders', auth='root', body='empty_object') \
        .request('POST', 'admin_hubs', auth='root', body='long_name').request('POST', 'admin_hubs', auth='root') \
        .request('POST', 'admin_agents', auth='root', body='control_chars').request('GET', 'admin_agents', auth='root')
    p['addresses'] = R(1).request('GET', 'sites', auth='bob', address=0).request('GET', 'sites', auth='bob', address=1) \
        .request('GET', 'sites', auth='bob', address=2).request('GET', 'sites', auth='bob', address=3) \
        .request('GET', 'sites', auth='bob', address=4).request('GET', 'sites', auth='bob', address=5) \
        .request('GET', 'sites', auth='bob', address=0).request('GET', 'sites', auth='bob', address=0) \
        .request('GET', 'sites', auth='bob', address=0).request('GET', 'sites', auth='bob', address=0)
    p['expiry_and_refresh'] = R().request('POST', 'login', body='login', user='bob').advance(5) \
        .request('POST', 'refresh', auth='last').advance(5).request('GET', 'sites', auth='bob') \
        .request('GET', 'sites', auth='last').advance(7).request('POST', 'refresh', auth='last')
    p['delete_then_updates'] = R().request('POST', 'deploy', auth='alice', site=1).request('POST', 'deploy', auth='bob', site=3) \
        .request('DELETE', 'site', auth='alice', site=1).update(0, 1).update(1, 1).request('POST', 'sites', auth='alice', body='site_new') \
        .update(0, 2).request('GET', 'sites', auth='alice')
    p['query_strings'] = R().request('GET', 'site_query', auth='bob', site=3).request('GET', 'site_query', auth='bob', site=1) \
        .raw('GET', '/api/sites?/../admin/hubs', '', auth='root').raw('POST', '/api/admin/hubs?x', '{"hubId":"hub-3"}', auth='root') \
        .raw('GET', '/healthz?', '').raw('GET', '/api/sites/1#frag', '', auth='alice')
    p['methods'] = R().request('PATCH', 'site', auth='alice', site=1, body='rename').request('HEAD', 'sites', auth='alice') \
        .request('POST ', 'sites', auth='alice', body='site_new').request('', 'sites', auth='alice') \
        .request('DELETE', 'sites', auth='alice').request('PUT', 'deploy', auth='alice', site=1) \
        .raw('OPTIONS', '/api/sites', '', auth='alice').raw('GET\r\n', '/api/sites', '', auth='alice')
    return p


def write(target, progs):
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, 'corpus', target)
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if not name.startswith('regression_'):  # inputs that once failed stay
            os.remove(os.path.join(out, name))
    for name, prog in progs.items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(bytes(prog.out))
    print('%d programs in %s' % (len(progs), out), file=sys.stderr)


def main():
    write('fuzz_hub', hub_programs())
    write('fuzz_rest', rest_programs())


if __name__ == '__main__':
    main()
