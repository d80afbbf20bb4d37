"""Generate the bundled sample chat dataset ``qlora_nb/assets/sample_chats.jsonl``.

The dataset is a small, fully synthetic, bilingual (English / Japanese) set of
chat conversations in the ``{"messages": [{"role": ..., "content": ...}]}``
format.  All answers follow fixed templates (capitals, small arithmetic,
next/previous weekday and month, colour names, opposites, counting, spelling
words backwards, greetings, numbered "how do I ..." steps) so that a tiny
causal LM can learn them within a few minutes of CPU training.  A tail of
longer conversations (question sets, multiplication tables, multi-turn quiz
sessions) exercises truncation and packing.

The output is deterministic (``random.Random(0)``): running the script twice
produces byte-identical files.  Standard library only.

Usage (from the repository root)::

    python tools/make_sample_chats.py

It writes ``qlora_nb/assets/sample_chats.jsonl`` relative to the repository
root (located from this file's path) and prints a few counts.
"""

import json
import random
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "qlora_nb" / "assets" / "sample_chats.jsonl"

SEED = 0
N_PER_LANG = 150        # conversations per language
N_MULTI_SHORT = 43      # short multi-turn conversations per language
N_LONG_SINGLE = 8       # long single-turn conversations per language
N_LONG_MULTI = 2        # long multi-turn quiz sessions per language
SYSTEM_FRACTION = 0.3

SYSTEM_PROMPTS = {
    "en": [
        "You are a concise assistant.",
        "You are a helpful assistant. Answer briefly.",
        "You are a friendly tutor.",
    ],
    "ja": [
        "あなたは簡潔に答えるアシスタントです。",
        "あなたは親切なアシスタントです。短く答えてください。",
        "あなたは丁寧な先生です。",
    ],
}

# --------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------

# (English country name as used in a sentence, English capital, Japanese country, Japanese capital)
CAPITALS = [
    ("France", "Paris", "フランス", "パリ"),
    ("Japan", "Tokyo", "日本", "東京"),
    ("Germany", "Berlin", "ドイツ", "ベルリン"),
    ("Italy", "Rome", "イタリア", "ローマ"),
    ("Spain", "Madrid", "スペイン", "マドリード"),
    ("the United Kingdom", "London", "イギリス", "ロンドン"),
    ("Canada", "Ottawa", "カナダ", "オタワ"),
    ("Australia", "Canberra", "オーストラリア", "キャンベラ"),
    ("China", "Beijing", "中国", "北京"),
    ("South Korea", "Seoul", "韓国", "ソウル"),
    ("Egypt", "Cairo", "エジプト", "カイロ"),
    ("Brazil", "Brasília", "ブラジル", "ブラジリア"),
    ("Russia", "Moscow", "ロシア", "モスクワ"),
    ("India", "New Delhi", "インド", "ニューデリー"),
    ("Mexico", "Mexico City", "メキシコ", "メキシコシティ"),
    ("Thailand", "Bangkok", "タイ", "バンコク"),
    ("Kenya", "Nairobi", "ケニア", "ナイロビ"),
    ("Norway", "Oslo", "ノルウェー", "オスロ"),
    ("Sweden", "Stockholm", "スウェーデン", "ストックホルム"),
    ("Portugal", "Lisbon", "ポルトガル", "リスボン"),
    ("Greece", "Athens", "ギリシャ", "アテネ"),
    ("Argentina", "Buenos Aires", "アルゼンチン", "ブエノスアイレス"),
    ("Peru", "Lima", "ペルー", "リマ"),
    ("Vietnam", "Hanoi", "ベトナム", "ハノイ"),
    ("Austria", "Vienna", "オーストリア", "ウィーン"),
    ("Poland", "Warsaw", "ポーランド", "ワルシャワ"),
    ("Finland", "Helsinki", "フィンランド", "ヘルシンキ"),
    ("Ireland", "Dublin", "アイルランド", "ダブリン"),
    ("Turkey", "Ankara", "トルコ", "アンカラ"),
    ("New Zealand", "Wellington", "ニュージーランド", "ウェリントン"),
    ("Denmark", "Copenhagen", "デンマーク", "コペンハーゲン"),
    ("Belgium", "Brussels", "ベルギー", "ブリュッセル"),
    ("Chile", "Santiago", "チリ", "サンティアゴ"),
    ("Cuba", "Havana", "キューバ", "ハバナ"),
    ("the Philippines", "Manila", "フィリピン", "マニラ"),
    ("Hungary", "Budapest", "ハンガリー", "ブダペスト"),
]

WEEKDAYS_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS_JA = ["月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"]
MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July",
             "August", "September", "October", "November", "December"]
MONTHS_JA = [f"{i}月" for i in range(1, 13)]

# (English, Japanese, romaji)
COLOURS = [
    ("red", "赤", "aka"),
    ("blue", "青", "ao"),
    ("green", "緑", "midori"),
    ("yellow", "黄色", "kiiro"),
    ("white", "白", "shiro"),
    ("black", "黒", "kuro"),
    ("purple", "紫", "murasaki"),
    ("orange", "オレンジ", "orenji"),
    ("pink", "ピンク", "pinku"),
    ("brown", "茶色", "chairo"),
    ("grey", "灰色", "haiiro"),
]

OPPOSITES_EN = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"),
    ("open", "closed"), ("happy", "sad"), ("early", "late"), ("full", "empty"),
    ("strong", "weak"), ("wet", "dry"), ("day", "night"), ("left", "right"),
    ("inside", "outside"), ("push", "pull"), ("win", "lose"), ("high", "low"),
    ("loud", "quiet"), ("hard", "soft"), ("thick", "thin"), ("rich", "poor"),
]
OPPOSITES_JA = [
    ("暑い", "寒い"), ("大きい", "小さい"), ("長い", "短い"), ("新しい", "古い"),
    ("明るい", "暗い"), ("重い", "軽い"), ("多い", "少ない"), ("強い", "弱い"),
    ("広い", "狭い"), ("上", "下"), ("右", "左"), ("前", "後ろ"),
    ("入口", "出口"), ("昼", "夜"), ("勝つ", "負ける"), ("開ける", "閉める"),
    ("高い", "低い"), ("速い", "遅い"), ("太い", "細い"), ("始まる", "終わる"),
]

WORDS_EN = [
    "apple", "river", "garden", "pencil", "window", "orange", "planet", "yellow",
    "basket", "candle", "silver", "rabbit", "forest", "bottle", "summer", "winter",
    "castle", "guitar", "rocket", "tomato", "music", "cloud", "stone", "bread",
    "table", "chair", "lemon", "ocean", "tiger", "horse",
]
WORDS_JA = [
    "さくら", "すいか", "たまご", "りんご", "くるま", "とけい", "めがね", "かばん",
    "つくえ", "ひこうき", "みかん", "たぬき", "きつね", "うさぎ", "さかな", "やさい",
    "あたま", "からす", "こども", "ともだち", "はなび", "たいこ", "ふうせん", "かさ",
]

GREETINGS_EN = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi!", "Hi! How can I help you today?"),
    ("Good morning!", "Good morning! How can I help you today?"),
    ("Good afternoon!", "Good afternoon! How can I help you today?"),
    ("Good evening!", "Good evening! How can I help you today?"),
    ("How are you?", "I'm doing well, thank you. How can I help you today?"),
    ("Thank you!", "You're welcome!"),
    ("Thanks!", "You're welcome! 😊"),
    ("Goodbye!", "Goodbye! Have a nice day."),
]
GREETINGS_JA = [
    ("こんにちは！", "こんにちは！何かお手伝いできることはありますか？"),
    ("おはようございます！", "おはようございます！何かお手伝いできることはありますか？"),
    ("こんばんは！", "こんばんは！何かお手伝いできることはありますか？"),
    ("お元気ですか？", "はい、元気です。ありがとうございます。何かお手伝いできることはありますか？"),
    ("ありがとうございます。", "どういたしまして。"),
    ("ありがとう！", "どういたしまして！😊"),
    ("さようなら！", "さようなら！よい一日を。"),
    ("はじめまして。", "はじめまして！何かお手伝いできることはありますか？"),
]

# "How do I ...?" -> fixed numbered-steps format.
HOWTO_EN = [
    ("boil an egg", [
        "Put the egg in a pot of cold water.",
        "Bring the water to a boil.",
        "Cook the egg for 9 minutes.",
        "Cool the egg in cold water.",
    ]),
    ("make a cup of tea", [
        "Boil some water.",
        "Put a tea bag in a cup.",
        "Pour the hot water into the cup.",
        "Wait 3 minutes, then remove the tea bag.",
    ]),
    ("wash my hands", [
        "Wet your hands with water.",
        "Apply soap.",
        "Scrub your hands for 20 seconds.",
        "Rinse and dry your hands.",
    ]),
    ("plant a seed", [
        "Fill a pot with soil.",
        "Make a small hole in the soil.",
        "Put the seed in the hole and cover it.",
        "Water it gently.",
    ]),
    ("send an email", [
        "Open your email app.",
        "Click \"New message\".",
        "Enter the address, the subject and the text.",
        "Click \"Send\".",
    ]),
    ("cook rice", [
        "Rinse the rice in cold water.",
        "Put the rice and water in a pot.",
        "Bring it to a boil, then simmer for 15 minutes.",
        "Let it rest for 10 minutes.",
    ]),
    ("make a sandwich", [
        "Take two slices of bread.",
        "Spread butter on one side of each slice.",
        "Add your fillings.",
        "Put the two slices together.",
    ]),
    ("brush my teeth", [
        "Put toothpaste on your toothbrush.",
        "Brush all your teeth for 2 minutes.",
        "Spit out the toothpaste.",
        "Rinse your mouth and the toothbrush.",
    ]),
    ("set an alarm on my phone", [
        "Open the Clock app.",
        "Tap \"Alarm\".",
        "Choose a time.",
        "Tap \"Save\".",
    ]),
    ("create a new folder on my computer", [
        "Right-click an empty area of the desktop.",
        "Choose \"New folder\".",
        "Type a name for the folder.",
        "Press Enter.",
    ]),
    ("install a Python package", [
        "Open a terminal.",
        "Type pip install followed by the package name.",
        "Press Enter.",
        "Wait for the installation to finish.",
    ]),
    ("water a house plant", [
        "Check that the soil is dry.",
        "Pour water slowly onto the soil.",
        "Stop when water comes out of the bottom of the pot.",
        "Empty the saucer after a few minutes.",
    ]),
]
HOWTO_JA = [
    ("卵をゆでる", [
        "鍋に水と卵を入れます。",
        "火にかけて沸騰させます。",
        "9分間ゆでます。",
        "冷たい水で冷やします。",
    ]),
    ("お茶をいれる", [
        "お湯を沸かします。",
        "急須に茶葉を入れます。",
        "急須にお湯を注ぎます。",
        "1分待ってから湯のみに注ぎます。",
    ]),
    ("手を洗う", [
        "手を水でぬらします。",
        "せっけんをつけます。",
        "20秒間よくこすります。",
        "水で流して、タオルでふきます。",
    ]),
    ("種をまく", [
        "鉢に土を入れます。",
        "土に小さな穴をあけます。",
        "種を入れて土をかぶせます。",
        "やさしく水をやります。",
    ]),
    ("メールを送る", [
        "メールアプリを開きます。",
        "「新規作成」を押します。",
        "宛先、件名、本文を入力します。",
        "「送信」を押します。",
    ]),
    ("ご飯を炊く", [
        "お米を研ぎます。",
        "お米と水を炊飯器に入れます。",
        "スイッチを押します。",
        "炊けたら10分蒸らします。",
    ]),
    ("サンドイッチを作る", [
        "パンを2枚用意します。",
        "パンにバターを塗ります。",
        "好きな具をのせます。",
        "もう1枚のパンを重ねます。",
    ]),
    ("歯をみがく", [
        "歯ブラシに歯みがき粉をつけます。",
        "2分間すべての歯をみがきます。",
        "水で口をすすぎます。",
        "歯ブラシを洗います。",
    ]),
    ("スマートフォンでアラームを設定する", [
        "時計アプリを開きます。",
        "「アラーム」をタップします。",
        "時刻を選びます。",
        "「保存」をタップします。",
    ]),
    ("パソコンで新しいフォルダーを作る", [
        "デスクトップの何もない場所を右クリックします。",
        "「新規作成」から「フォルダー」を選びます。",
        "フォルダーの名前を入力します。",
        "Enterキーを押します。",
    ]),
    ("Pythonのパッケージをインストールする", [
        "ターミナルを開きます。",
        "「pip install」に続けてパッケージ名を入力します。",
        "Enterキーを押します。",
        "インストールが終わるまで待ちます。",
    ]),
    ("観葉植物に水をやる", [
        "土が乾いているか確かめます。",
        "土にゆっくり水を注ぎます。",
        "鉢の底から水が出てきたら止めます。",
        "数分後に受け皿の水を捨てます。",
    ]),
]


# --------------------------------------------------------------------------
# Question/answer pools (one user turn -> one assistant turn)
# --------------------------------------------------------------------------

def steps_en(steps):
    return "Here are the steps:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def steps_ja(steps):
    return "手順は次のとおりです。\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def arithmetic_problems(rng, n_each=14):
    """Return a list of (a, op, b, result) with correct results, no duplicates."""
    out, seen = [], set()
    for op in ("+", "-", "×"):
        count = 0
        while count < n_each:
            if op == "+":
                a, b = rng.randint(1, 50), rng.randint(1, 50)
                r = a + b
            elif op == "-":
                a = rng.randint(2, 60)
                b = rng.randint(1, a)
                r = a - b
            else:
                a, b = rng.randint(2, 12), rng.randint(2, 12)
                r = a * b
            if (a, op, b) in seen:
                continue
            seen.add((a, op, b))
            out.append((a, op, b, r))
            count += 1
    return out


def count_ranges(rng, n=20):
    """Return a list of (start, end) pairs, up or down, 4-10 numbers long."""
    out, seen = [], set()
    while len(out) < n:
        start = rng.randint(1, 30)
        length = rng.randint(4, 10)
        if rng.random() < 0.3:
            end = start + length - 1
            start, end = end, start      # count down
        else:
            end = start + length - 1
        if (start, end) in seen:
            continue
        seen.add((start, end))
        out.append((start, end))
    return out


def count_list(start, end):
    step = 1 if end >= start else -1
    return [str(i) for i in range(start, end + step, step)]


def build_pools(rng):
    """Return {lang: {category: [(question, answer), ...]}}."""
    arith = arithmetic_problems(rng)
    counts = count_ranges(rng)

    en, ja = {}, {}

    en["capital"] = [(f"What is the capital of {c}?", f"The capital of {c} is {cap}.")
                     for c, cap, _, _ in CAPITALS]
    ja["capital"] = [(f"{c}の首都はどこですか？", f"{c}の首都は{cap}です。")
                     for _, _, c, cap in CAPITALS]

    en["arith"] = [(f"What is {a} {op} {b}?", f"{a} {op} {b} = {r}.") for a, op, b, r in arith]
    ja["arith"] = [(f"{a} {op} {b} はいくつですか？", f"{a} {op} {b} = {r} です。") for a, op, b, r in arith]

    en["weekday"], ja["weekday"] = [], []
    for i in range(7):
        nxt, prv = (i + 1) % 7, (i - 1) % 7
        en["weekday"].append((f"What day comes after {WEEKDAYS_EN[i]}?",
                              f"The day after {WEEKDAYS_EN[i]} is {WEEKDAYS_EN[nxt]}."))
        en["weekday"].append((f"What day comes before {WEEKDAYS_EN[i]}?",
                              f"The day before {WEEKDAYS_EN[i]} is {WEEKDAYS_EN[prv]}."))
        ja["weekday"].append((f"{WEEKDAYS_JA[i]}の次は何曜日ですか？",
                              f"{WEEKDAYS_JA[i]}の次は{WEEKDAYS_JA[nxt]}です。"))
        ja["weekday"].append((f"{WEEKDAYS_JA[i]}の前は何曜日ですか？",
                              f"{WEEKDAYS_JA[i]}の前は{WEEKDAYS_JA[prv]}です。"))

    en["month"], ja["month"] = [], []
    for i in range(12):
        nxt, prv = (i + 1) % 12, (i - 1) % 12
        en["month"].append((f"What month comes after {MONTHS_EN[i]}?",
                            f"The month after {MONTHS_EN[i]} is {MONTHS_EN[nxt]}."))
        en["month"].append((f"What month comes before {MONTHS_EN[i]}?",
                            f"The month before {MONTHS_EN[i]} is {MONTHS_EN[prv]}."))
        ja["month"].append((f"{MONTHS_JA[i]}の次は何月ですか？",
                            f"{MONTHS_JA[i]}の次は{MONTHS_JA[nxt]}です。"))
        ja["month"].append((f"{MONTHS_JA[i]}の前は何月ですか？",
                            f"{MONTHS_JA[i]}の前は{MONTHS_JA[prv]}です。"))

    en["colour"] = [(f"How do you say \"{e}\" in Japanese?",
                     f"\"{e.capitalize()}\" in Japanese is {j} ({r}).") for e, j, r in COLOURS]
    ja["colour"] = [(f"「{j}」は英語で何と言いますか？",
                     f"「{j}」は英語で「{e}」と言います。") for e, j, r in COLOURS]

    en["opposite"] = []
    for a, b in OPPOSITES_EN:
        en["opposite"].append((f"What is the opposite of \"{a}\"?", f"The opposite of \"{a}\" is \"{b}\"."))
        en["opposite"].append((f"What is the opposite of \"{b}\"?", f"The opposite of \"{b}\" is \"{a}\"."))
    ja["opposite"] = []
    for a, b in OPPOSITES_JA:
        ja["opposite"].append((f"「{a}」の反対は何ですか？", f"「{a}」の反対は「{b}」です。"))
        ja["opposite"].append((f"「{b}」の反対は何ですか？", f"「{b}」の反対は「{a}」です。"))

    en["count"], ja["count"] = [], []
    for s, e in counts:
        nums = count_list(s, e)
        if e >= s:
            en["count"].append((f"Count from {s} to {e}.", ", ".join(nums) + "."))
            ja["count"].append((f"{s}から{e}まで数えてください。", "、".join(nums) + "。"))
        else:
            en["count"].append((f"Count down from {s} to {e}.", ", ".join(nums) + "."))
            ja["count"].append((f"{s}から{e}まで逆に数えてください。", "、".join(nums) + "。"))

    en["backwards"] = [(f"Spell \"{w}\" backwards.",
                        f"\"{w}\" spelled backwards is \"{w[::-1]}\".") for w in WORDS_EN]
    ja["backwards"] = [(f"「{w}」を逆から読むと何になりますか？",
                        f"「{w}」を逆から読むと「{w[::-1]}」です。") for w in WORDS_JA]

    en["greeting"] = list(GREETINGS_EN)
    ja["greeting"] = list(GREETINGS_JA)

    en["howto"] = [(f"How do I {task}?", steps_en(steps)) for task, steps in HOWTO_EN]
    ja["howto"] = [(f"{task}にはどうすればいいですか？", steps_ja(steps)) for task, steps in HOWTO_JA]

    return {"en": en, "ja": ja}


# Categories with one-line factual answers; used to build long question sets.
QUIZ_CATEGORIES = ["capital", "arith", "weekday", "month", "colour", "opposite", "backwards"]


# --------------------------------------------------------------------------
# Long conversations
# --------------------------------------------------------------------------

def quiz_turn(rng, pool, lang, n_questions):
    facts = [qa for cat in QUIZ_CATEGORIES for qa in pool[cat]]
    picked = rng.sample(facts, n_questions)
    qs = "\n".join(f"{i}. {q}" for i, (q, _) in enumerate(picked, 1))
    ans = "\n".join(f"{i}. {a}" for i, (_, a) in enumerate(picked, 1))
    if lang == "en":
        return f"Please answer these questions:\n{qs}", ans
    return f"次の質問に答えてください。\n{qs}", ans


def table_turn(numbers, lang):
    if lang == "en":
        names = ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"
        blocks = [f"Table of {n}:\n" + "\n".join(f"{n} × {k} = {n * k}" for k in range(1, 13))
                  for n in numbers]
        return (f"Write the multiplication tables for {names}, up to 12.",
                "Here are the multiplication tables.\n\n" + "\n\n".join(blocks))
    blocks = [f"【{n}の段】\n" + "\n".join(f"{n} × {k} = {n * k}" for k in range(1, 10))
              for n in numbers]
    return (f"{numbers[0]}の段から{numbers[-1]}の段までの九九を書いてください。",
            "九九は次のとおりです。\n\n" + "\n\n".join(blocks))


def long_single_turns(rng, pool, lang, n):
    """n long single-turn (question, answer) pairs: half question sets, half tables."""
    turns = []
    n_tables = n // 2
    if lang == "en":
        starts = rng.sample(range(2, 10), n_tables)
        for s in starts:
            width = rng.choice([3, 4])
            turns.append(table_turn(list(range(s, min(s + width, 13))), lang))
    else:
        starts = rng.sample(range(1, 7), n_tables)   # 4 tables from start..start+3, within 1..9
        for s in starts:
            turns.append(table_turn(list(range(s, s + 4)), lang))
    for _ in range(n - n_tables):
        turns.append(quiz_turn(rng, pool, lang, rng.randint(15, 25)))
    return turns


# --------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------

def flat_pool(pool):
    return [qa for cat in sorted(pool) for qa in pool[cat]]


def make_record(turns, system):
    msgs = []
    if system is not None:
        msgs.append({"role": "system", "content": system})
    for q, a in turns:
        msgs.append({"role": "user", "content": q})
        msgs.append({"role": "assistant", "content": a})
    return {"messages": msgs}


def build_language(rng, pool, lang, seen):
    """Build N_PER_LANG distinct conversations for one language."""
    records = []
    flat = flat_pool(pool)
    n_single = N_PER_LANG - N_MULTI_SHORT - N_LONG_SINGLE - N_LONG_MULTI
    n_system = round(SYSTEM_FRACTION * N_PER_LANG)
    sys_flags = [True] * n_system + [False] * (N_PER_LANG - n_system)
    rng.shuffle(sys_flags)
    flags = iter(sys_flags)
    thanks = GREETINGS_EN[7] if lang == "en" else GREETINGS_JA[5]

    def add(make_turns):
        """Append one new conversation; redraw its turns on a (rare) duplicate."""
        with_system = next(flags)
        while True:
            turns = make_turns()
            system = rng.choice(SYSTEM_PROMPTS[lang]) if with_system else None
            rec = make_record(turns, system)
            key = json.dumps(rec, ensure_ascii=False, sort_keys=True)
            if key not in seen:
                seen.add(key)
                records.append(rec)
                return

    # Short single-turn: distinct questions drawn without replacement.
    for qa in rng.sample(flat, n_single):
        add(lambda qa=qa: [qa])

    # Short multi-turn: 2-4 distinct user turns, now and then ending with thanks.
    def short_multi():
        turns = rng.sample(flat, rng.randint(2, 4))
        if rng.random() < 0.2 and thanks not in turns:
            turns[-1] = thanks
        return turns

    for _ in range(N_MULTI_SHORT):
        add(short_multi)

    # Long single-turn: question sets and multiplication tables.
    for qa in long_single_turns(rng, pool, lang, N_LONG_SINGLE):
        add(lambda qa=qa: [qa])

    # Long multi-turn quiz sessions: 3-4 turns of 5-8 questions each.
    for _ in range(N_LONG_MULTI):
        add(lambda: [quiz_turn(rng, pool, lang, rng.randint(5, 8))
                     for _ in range(rng.randint(3, 4))])

    return records

# --------------------------------------------------------------------------
# Tool calls and reasoning (the canonical record: tools, tool_calls, tool turns, reasoning_content)
# --------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALC = {"type": "function", "function": {"name": "calculate", "description": "計算式を評価する",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}

def _call(name, **arguments):
    return {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}

TOOL_AND_REASONING_CHATS = [
    {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        _call("get_weather", city="Paris"),
        {"role": "tool", "name": "get_weather", "content": "{\"weather\": \"sunny\", \"temperature\": 21}"},
        {"role": "assistant", "content": "It is sunny in Paris, 21 degrees."}]},
    {"tools": [WEATHER], "messages": [
        {"role": "system", "content": "あなたは親切なアシスタントです。短く答えてください。"},
        {"role": "user", "content": "東京の天気は？"},
        _call("get_weather", city="東京"),
        {"role": "tool", "name": "get_weather", "content": "{\"天気\": \"雨\", \"気温\": 15}"},
        {"role": "assistant", "content": "東京は雨で、気温は15度です。"}]},
    {"messages": [
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "reasoning_content": "12 + 30: 10 + 30 = 40, and 2 more is 42.", "content": "12 + 30 = 42."}]},
    {"chat_template_kwargs": {"enable_thinking": True}, "messages": [
        {"role": "user", "content": "7 + 5 は？"},
        {"role": "assistant", "reasoning_content": "7 に 3 を足すと 10、残りの 2 を足して 12。", "content": "7 + 5 = 12。"},
        {"role": "user", "content": "では 12 + 9 は？"},
        {"role": "assistant", "reasoning_content": "12 に 8 を足すと 20、残りの 1 を足して 21。", "content": "12 + 9 = 21。"}]},
    {"tools": [CALC], "messages": [
        {"role": "user", "content": "23 × 4 を計算してください。"},
        {"role": "assistant", "reasoning_content": "掛け算なので計算ツールを使う。", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "calculate", "arguments": {"expression": "23 * 4"}}}]},
        {"role": "tool", "name": "calculate", "content": "92"},
        {"role": "assistant", "content": "23 × 4 = 92 です。"}]},
    {"messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Which day comes after Monday?"},
        {"role": "assistant", "reasoning_content": "The week goes Monday, Tuesday, Wednesday.", "content": "Tuesday comes after Monday."}]},
]
TOOL_CHATS_AT = 100     # where they go in the shuffled file: not among the first chats tests take, nor the long tail


def main():
    rng = random.Random(SEED)
    pools = build_pools(rng)
    seen = set()
    records = []
    for lang in ("en", "ja"):
        records.extend(build_language(rng, pools[lang], lang, seen))
    rng.shuffle(records)
    records[TOOL_CHATS_AT:TOOL_CHATS_AT] = TOOL_AND_REASONING_CHATS

    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT_PATH, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    n = len(records)
    n_sys = sum(r["messages"][0]["role"] == "system" for r in records)
    n_multi = sum(sum(m["role"] == "user" for m in r["messages"]) > 1 for r in records)
    print(f"wrote {n} conversations to {OUT_PATH.relative_to(REPO_ROOT)}")
    print(f"  with system prompt: {n_sys}")
    print(f"  multi-turn:         {n_multi}")
    print(f"  tools / reasoning:  {len(TOOL_AND_REASONING_CHATS)}")


if __name__ == "__main__":
    main()
