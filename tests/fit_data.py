"""A small hand-made training set for fitting tests: candidate lists with text, binary and graded qrels."""
import pandas as pd

PASSAGES = {
    "q1": ("where do cats sleep", [
        "Cats sleep in warm sunny spots, on beds and in boxes.",
        "The stock market fell sharply on Tuesday.",
        "Dogs bark at strangers and at the postman.",
        "A cat naps up to sixteen hours a day, often on a sofa.",
        "Rain in Spain falls mainly on the plain.",
        "Kittens sleep even more than adult cats.",
    ]),
    "q2": ("how do volcanoes erupt", [
        "Bread rises because yeast makes carbon dioxide.",
        "Magma pressure builds under the crust until a volcano erupts.",
        "Football is played by two teams of eleven.",
        "Eruptions happen when gas-rich magma reaches the surface.",
        "The moon orbits the earth every 27 days.",
        "Volcanic ash can travel thousands of kilometres.",
    ]),
    "q3": ("what do bees make", [
        "Bees make honey from the nectar of flowers.",
        "Trains run on rails between cities.",
        "Beeswax is made by worker bees to build combs.",
        "Pianos have 88 keys.",
        "A hive can hold tens of thousands of bees.",
        "Copper conducts electricity well.",
    ]),
    "q4": ("why is the sky blue", [
        "Short blue wavelengths scatter more in the air (Rayleigh scattering).",
        "Cheese is made from milk.",
        "Sunsets look red because blue light is scattered away.",
        "The capital of France is Paris.",
        "Light from the sun contains all colours.",
        "Penguins live in the southern hemisphere.",
    ]),
    "q5": ("how fast do cheetahs run", [
        "Tea is grown in India and China.",
        "Cheetahs reach about 100 km/h in short bursts.",
        "A cheetah accelerates faster than most sports cars.",
        "Glaciers move a few metres a year.",
        "Big cats include lions, tigers and cheetahs.",
        "Chess pieces move in different ways.",
    ]),
    "q6": ("what causes tides", [
        "Tides are caused by the moon's gravity pulling on the oceans.",
        "Apples grow on trees.",
        "The sun also raises smaller tides.",
        "Guitars usually have six strings.",
        "High tide comes about twice a day.",
        "Snow is frozen water vapour.",
    ]),
}

#: graded judgements (0-3); passages not listed are unjudged (treated as 0)
GRADED = {
    "q1": {0: 3, 3: 2, 5: 1, 1: 0}, "q2": {1: 3, 3: 3, 5: 1, 0: 0}, "q3": {0: 3, 2: 2, 4: 1},
    "q4": {0: 3, 2: 1, 4: 1, 1: 0}, "q5": {1: 3, 2: 2, 4: 1}, "q6": {0: 3, 2: 2, 4: 1},
}


def results(qids=None) -> pd.DataFrame:
    """First-stage results with text: passages in the order above, descending scores."""
    rows = []
    for qid, (query, texts) in PASSAGES.items():
        if qids is not None and qid not in qids:
            continue
        for i, text in enumerate(texts):
            rows.append({"qid": qid, "query": query, "docno": f"{qid}-d{i}", "text": text, "rank": i,
                         "score": float(len(texts) - i)})
    return pd.DataFrame(rows)


def topics(qids=None) -> pd.DataFrame:
    return pd.DataFrame([{"qid": q, "query": PASSAGES[q][0]} for q in PASSAGES if qids is None or q in qids])


def qrels(graded: bool = True, qids=None) -> pd.DataFrame:
    rows = []
    for qid, grades in GRADED.items():
        if qids is not None and qid not in qids:
            continue
        for i, g in grades.items():
            rows.append({"qid": qid, "docno": f"{qid}-d{i}", "label": g if graded else int(g >= 2)})
    return pd.DataFrame(rows)
