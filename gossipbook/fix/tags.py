"""FIX 4.4 tag numbers and enumerated values the gateway reads or writes, in one place.

Why a module of constants: the session layer, the application mapping, the tests and docs/fix.md
all speak of the same tags; naming them once keeps a typo from becoming a silent interop bug.
User-defined tags (5000-9999 and 20000-39999 are the ranges FIX leaves to counterparties) are the
``GB_*`` ones at the end; docs/fix.md says what each means.
"""

from __future__ import annotations

BEGIN_STRING = b"FIX.4.4"

# ---- header and trailer ---------------------------------------------------------------------------
BeginString = 8
BodyLength = 9
MsgType = 35
MsgSeqNum = 34
SenderCompID = 49
TargetCompID = 56
SendingTime = 52
PossDupFlag = 43
PossResend = 97
OrigSendingTime = 122
CheckSum = 10

HEADER_TAGS = frozenset({BeginString, BodyLength, MsgType, MsgSeqNum, SenderCompID, TargetCompID,
                         SendingTime, PossDupFlag, PossResend, OrigSendingTime, CheckSum})

# ---- session messages -----------------------------------------------------------------------------
BeginSeqNo = 7
EndSeqNo = 16
NewSeqNo = 36
GapFillFlag = 123
TestReqID = 112
HeartBtInt = 108
EncryptMethod = 98
ResetSeqNumFlag = 141
Username = 553
Password = 554
Text = 58
RefSeqNum = 45
RefTagID = 371
RefMsgType = 372
SessionRejectReason = 373

# ---- application messages -------------------------------------------------------------------------
Account = 1
AvgPx = 6
ClOrdID = 11
CumQty = 14
ExecID = 17
ExecRefID = 19
LastPx = 31
LastQty = 32
OrderID = 37
OrderQty = 38
OrdStatus = 39
OrdType = 40
OrigClOrdID = 41
Price = 44
Side = 54
Symbol = 55
TimeInForce = 59
TransactTime = 60
OrdRejReason = 103
CxlRejReason = 102
ExecType = 150
LeavesQty = 151
CxlRejResponseTo = 434
MassCancelRequestType = 530
MassCancelResponse = 531
MassCancelRejectReason = 532
TotalAffectedOrders = 533
SecondaryExecID = 527

# ---- user-defined (docs/fix.md, "Tags") -----------------------------------------------------------
#: the gossipbook trade id of a fill (stable across corrections; ExecIDs change)
GB_TRADE_ID = 20001
#: a fill's finality: "P" provisional (a replay after a partition may still revise it), "F" final
GB_FINALITY = 20002

# ---- message types --------------------------------------------------------------------------------
MT_HEARTBEAT = "0"
MT_TEST_REQUEST = "1"
MT_RESEND_REQUEST = "2"
MT_REJECT = "3"
MT_SEQUENCE_RESET = "4"
MT_LOGOUT = "5"
MT_LOGON = "A"
MT_EXECUTION_REPORT = "8"
MT_ORDER_CANCEL_REJECT = "9"
MT_NEW_ORDER_SINGLE = "D"
MT_ORDER_CANCEL_REQUEST = "F"
MT_ORDER_CANCEL_REPLACE = "G"
MT_ORDER_MASS_CANCEL_REQUEST = "q"
MT_ORDER_MASS_CANCEL_REPORT = "r"

#: session-level types: never resent, a resend covers them with SequenceReset-GapFill
ADMIN_TYPES = frozenset({MT_HEARTBEAT, MT_TEST_REQUEST, MT_RESEND_REQUEST, MT_REJECT, MT_SEQUENCE_RESET,
                         MT_LOGOUT, MT_LOGON})
#: application types a trading session accepts
APP_TYPES_IN = frozenset({MT_NEW_ORDER_SINGLE, MT_ORDER_CANCEL_REQUEST, MT_ORDER_CANCEL_REPLACE,
                          MT_ORDER_MASS_CANCEL_REQUEST})

# ---- SessionRejectReason (373) --------------------------------------------------------------------
R_INVALID_TAG = 0
R_REQUIRED_TAG_MISSING = 1
R_TAG_NOT_DEFINED_FOR_MSG = 2
R_UNDEFINED_TAG = 3
R_TAG_WITHOUT_VALUE = 4
R_VALUE_INCORRECT = 5
R_INCORRECT_DATA_FORMAT = 6
R_COMPID_PROBLEM = 9
R_SENDING_TIME_ACCURACY = 10
R_INVALID_MSG_TYPE = 11
R_TAG_REPEATED = 13
R_TAG_OUT_OF_ORDER = 14
R_OTHER = 99

# ---- ExecType (150) / OrdStatus (39) --------------------------------------------------------------
ET_NEW = "0"
ET_CANCELED = "4"
ET_REPLACED = "5"
ET_REJECTED = "8"
ET_TRADE = "F"
ET_TRADE_CORRECT = "G"
ET_TRADE_CANCEL = "H"
ET_ORDER_STATUS = "I"

OS_NEW = "0"
OS_PARTIAL = "1"
OS_FILLED = "2"
OS_CANCELED = "4"
OS_REJECTED = "8"

# ---- OrdRejReason (103), CxlRejReason (102) -------------------------------------------------------
ORR_BROKER_OPTION = 0
ORR_UNKNOWN_SYMBOL = 1
ORR_EXCHANGE_CLOSED = 2
ORR_EXCEEDS_LIMIT = 3
ORR_UNKNOWN_ORDER = 5
ORR_DUPLICATE_ORDER = 6
ORR_UNSUPPORTED = 11
ORR_INCORRECT_QUANTITY = 13
ORR_OTHER = 99

CRR_TOO_LATE = 0
CRR_UNKNOWN_ORDER = 1
CRR_BROKER_OPTION = 2
CRR_PENDING = 3
CRR_OTHER = 99
