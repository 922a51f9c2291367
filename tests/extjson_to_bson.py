"""Reads MongoDB Extended JSON, one document per line, with pymongo's parser (bson.json_util) and
writes the documents as concatenated BSON: an independent check of `mongoferry journal export`.

Usage: python extjson_to_bson.py IN.ndjson OUT.bson
"""

import sys

from bson import encode, json_util
from bson.json_util import DatetimeConversion, JSONMode, JSONOptions

# Dates as milliseconds: no range or time zone conversion can change them.
OPTIONS = JSONOptions(
    json_mode=JSONMode.CANONICAL, datetime_conversion=DatetimeConversion.DATETIME_MS
)


def main(source, target):
    count = 0
    with open(source, encoding="utf-8") as lines, open(target, "wb") as out:
        for number, line in enumerate(lines, 1):
            if not line.endswith("\n"):
                sys.exit(f"line {number} does not end with a newline")
            out.write(encode(json_util.loads(line, json_options=OPTIONS)))
            count += 1
    print(count)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
