"""The OpenFlow channel: asyncio, no eventlet, the only code touching the OpenFlow socket.

``protocol`` holds the version tables, names and errors, ``framing`` the byte-level
helpers (frames, bundle-adds, HELLO, xids), ``datapath`` one connection and
``server`` the listener.

Each chassis' controller listens on a TCP address; its Open vSwitch bridge
(br-int) is configured with ``tcp:HOST:PORT`` as controller and connects to it.
:class:`OpenFlowServer` accepts those connections; every connection becomes one
:class:`Datapath` (an :class:`asyncio.Protocol`) that

* exchanges HELLO and negotiates the version (OpenFlow 1.3 by default; 1.4 may
  be enabled with ``versions=(OFP13, OFP14)``), sends FEATURES_REQUEST (datapath
  id) and SET_CONFIG (miss_send_len), then fires ``on_connect(dp)``;
* answers the switch's ECHO_REQUESTs and sends its own echo when the peer has
  been silent for ``echo_interval`` seconds, closing the connection when no
  reply comes within ``echo_timeout`` (dead peer detection);
* frames the byte stream (8-byte header, then body) and parses it with
  os-ken's parser (``os_ken.ofproto.ofproto_parser.msg``); anything that is not
  OpenFlow (bad version, bad length, unparseable body, HELLO missing) is logged,
  counted and the connection is aborted -- the server keeps serving;
* tracks in-flight requests by xid (barrier, echo, multipart with
  OFPMPF_REPLY_MORE continuation, bundle control) and fails all of them with
  :class:`ConnectionLost` when the connection drops;
* logs every OFPT_ERROR with context (type/code names, xid, the type of the
  request that failed, parsed from the error's data), counts it and delivers it
  to whoever waits on that xid;
* delivers PACKET_IN to ``on_packet_in(dp, msg)`` and every other unsolicited
  message to ``on_message(dp, msg)``.

Callbacks may be plain functions or coroutine functions (then run as tasks);
an exception in any of them is logged with its traceback and counted in
``stats["errors"]`` -- never silently dropped.

Bundles
-------
:meth:`Datapath.send_bundle` installs a list of messages atomically: open,
adds, commit with ``ATOMIC|ORDERED``.  On OpenFlow 1.3 it uses the ONF bundle
extension (EXT-230: ``OFPT_EXPERIMENTER`` with experimenter ``0x4f4e4600``,
exp_type ``ONF_ET_BUNDLE_CONTROL`` 2300 / ``ONF_ET_BUNDLE_ADD_MESSAGE`` 2301,
os-ken's ``ONFBundleCtrlMsg``/``ONFBundleAddMsg``), which Open vSwitch 3.1
accepts on an OpenFlow 1.3 connection (verified by ``tests/test_ofchannel.py``);
on OpenFlow 1.4 it uses the standard ``OFPT_BUNDLE_CONTROL``/``OFPT_BUNDLE_ADD_MESSAGE``.
Open vSwitch validates (decodes) a message when it is *added* to a bundle: an
invalid message is answered with an error right away and simply left out of
the bundle, and a later commit would apply the rest.  To keep "all or nothing"
we therefore send open + adds + BARRIER_REQUEST in one write, and commit only
if no add failed; otherwise the bundle is discarded and :class:`BundleError`
raised.  Errors that only show at commit time (e.g. a flow referring to a
group that does not exist) make OVS reject the whole commit: first an error
for the failing message (its own xid), then one for the commit
(``ONFERR_ET_FAILED`` -- experimenter error 2313 -- on 1.3, ``OFPBFC_MSG_FAILED``
on 1.4).  Either way nothing of a failed bundle is applied.  Both flavours
behave the same in OVS 3.1, so we speak 1.3 by default (``versions=(OFP13,)``).
``send_bundle`` takes os-ken messages or one raw buffer of *plain* messages
(FLOW_MOD, GROUP_MOD, ...); it frames the open, a bundle-add around each and (pipelined)
the commit itself, in one compiled call (:func:`framing.wrap_bundle_adds`, byte-identical
to os-ken's ``ONFBundleCtrlMsg``/``ONFBundleAddMsg`` and their OpenFlow 1.4 counterparts).
On OpenFlow 1.3 it also takes a ``BundleFramer``, messages that pack and frame themselves
(the controller's plans: the packer writes the open, the adds and the commit in the call
that packs the rows, numbered from one block of the channel's xids).

Transaction ids
---------------
The channel allocates xids for its own messages from ``1 .. XID_CHANNEL_MAX``
(``0x7fffffff``) with :attr:`Datapath.xids`.  A packer producing a raw buffer
has two options:

* call ``dp.xids.alloc(n)`` and number its n messages ``first .. first+n-1``
  (the block is never handed out again until the 31-bit space wraps), or
* use xids in the reserved range ``XID_RAW_BASE .. 0xffffffff`` (high bit set),
  which the channel never allocates.

Either way replies and errors for raw messages never reach one of the
channel's own requests.  :meth:`Datapath.send_flow_mods` and
:meth:`Datapath.send_bundle` walk a raw buffer's headers to learn its xids, so
errors are attributed to the call that sent them.

Recommended OVS settings
------------------------
``ovs-vsctl set bridge br-int fail_mode=secure protocols=OpenFlow13,OpenFlow14``
and on the Controller row ``max_backoff=1000`` (ms; OVS reconnects by itself
with exponential backoff, the default cap of 8 s is too slow for migration)
and ``inactivity_probe=5000`` (ms; OVS sends ECHO_REQUEST after that much
silence and drops the connection after as much again without an answer; OVS
clamps any smaller non-zero value to 5 s).  Set all of it in the same ovs-vsctl
transaction as ``set-controller``.  Observed with OVS 3.1 (see the tests):

* flows survive a controller restart (fail_mode=secure): the switch keeps
  forwarding and reconnects to the new process; on_connect fires again;
* OVS flushes the whole flow table when a bridge goes from "has controllers" to
  "has none" (``del-controller``): retarget a live bridge with one
  ``set-controller``, never del-controller + set-controller;
* a ``unix:PATH`` controller target is only accepted if PATH lies in OVS's
  rundir (``OVS_RUNDIR``); elsewhere OVS refuses it (logged in ovs-vswitchd.log);
* a netdev datapath creates kernel tap devices (``ovs-netdev``, one per bridge
  and internal port), so only one such ovs-vswitchd can run per network
  namespace.
"""
from dfflow.openflow.datapath import Callback, Datapath, Messages
from dfflow.openflow.framing import (XID_CHANNEL_MAX, XID_RAW_BASE, XidAllocator, XidBlock, iter_frames,
                                     wrap_bundle_adds)
from dfflow.openflow.protocol import (OF13, OF14, OFP13, OFP14, PROTOCOLS, BundleError, ConnectionLost,
                                      FlowModError, OFChannelError, OFProto, OpenFlowError, ProtocolError,
                                      RequestTimeout, msg_type_name)
from dfflow.openflow.server import OpenFlowServer

__all__ = ["BundleError", "Callback", "ConnectionLost", "Datapath", "FlowModError", "Messages", "OF13", "OF14",
           "OFChannelError", "OFP13", "OFP14", "OFProto", "OpenFlowError", "OpenFlowServer", "PROTOCOLS",
           "ProtocolError", "RequestTimeout", "XID_CHANNEL_MAX", "XID_RAW_BASE", "XidAllocator", "XidBlock",
           "iter_frames",
           "msg_type_name", "wrap_bundle_adds"]
