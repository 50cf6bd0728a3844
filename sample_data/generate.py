"""Build the bundled sample corpus: three sources, five planted topics, a few bad inputs.

All sentences below were written for Emerge and are redistributable with the project (MIT).
Run `python sample_data/generate.py` to rebuild `sample_data/corpus/`; the output is
deterministic (fixed seed), and `sample_data/labels.csv` records each clean document's topic
so tests can check that discovery recovers the planted topics.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

TOPICS: dict[str, list[str]] = {
    "astronomy": [
        "The telescope tracked the faint galaxy across the night sky for six hours.",
        "Astronomers measured the redshift of the distant quasar with a new spectrograph.",
        "A comet with a bright green tail is passing close to the Sun this month.",
        "The rover photographed layered rocks in the dusty crater on Mars.",
        "Jupiter's moons were first observed through a small refracting telescope.",
        "The space station orbits the Earth roughly every ninety minutes.",
        "A supernova in a neighbouring galaxy briefly outshone billions of stars.",
        "The observatory dome opened as soon as the clouds cleared over the mountain.",
        "Saturn's rings are made of countless pieces of ice and rock.",
        "The probe used a gravity assist from Venus to reach the outer planets.",
        "Black holes bend the light of stars that pass behind them.",
        "The lunar eclipse turned the Moon a deep copper red for an hour.",
        "Exoplanets are often found by the tiny dip in starlight when they transit their star.",
        "The launch of the rocket was delayed because of high winds at the pad.",
        "Meteor showers happen when the Earth crosses the debris trail of a comet.",
        "The astronaut described the blue curve of the planet from orbit.",
        "Radio telescopes listen for faint signals from the early universe.",
        "The nebula glowed with the light of newborn stars inside its clouds of gas.",
    ],
    "cooking": [
        "Whisk the eggs with a pinch of salt before pouring them into the hot pan.",
        "The chef seared the steak in butter with garlic and fresh thyme.",
        "Knead the bread dough for ten minutes until it feels smooth and elastic.",
        "Simmer the tomato sauce slowly so the flavours deepen over an hour.",
        "Roast the vegetables in olive oil until their edges caramelise.",
        "The recipe calls for two cups of flour, one cup of sugar and a spoon of baking powder.",
        "Let the risotto rest for a minute after stirring in the parmesan.",
        "Marinate the chicken overnight in yoghurt, lemon and spices.",
        "The pastry must stay cold, so chill the butter before rubbing it into the flour.",
        "Toast the cumin seeds in a dry skillet until they smell fragrant.",
        "A sharp knife makes it easier to dice onions without tears.",
        "The soup tastes better the next day, once the herbs have infused the broth.",
        "Fold the whipped cream gently into the chocolate so the mousse stays light.",
        "Season the pasta water generously before adding the spaghetti.",
        "The cake is done when a skewer pushed into the centre comes out clean.",
        "Deglaze the pan with wine and scrape up the browned bits for the gravy.",
        "Fresh basil should be added at the end so it keeps its colour and aroma.",
        "The dumplings were steamed in a bamboo basket lined with cabbage leaves.",
    ],
    "football": [
        "The striker scored twice in the second half to win the match.",
        "The goalkeeper saved a penalty in the final minute of extra time.",
        "The coach changed the formation to three defenders after the break.",
        "Fans filled the stadium to watch the derby against their old rivals.",
        "The referee showed a red card for a dangerous tackle from behind.",
        "The midfielder controlled the tempo of the game with short, quick passes.",
        "The club signed a young winger during the transfer window.",
        "A late equaliser from a corner kick kept their title hopes alive.",
        "The team climbed to second place in the league table after the victory.",
        "The captain lifted the trophy in front of the travelling supporters.",
        "Video review overturned the goal because the forward was offside.",
        "The defenders pressed high up the pitch to win the ball back quickly.",
        "Injuries forced the manager to start two teenagers in the cup final.",
        "The free kick curled over the wall and into the top corner of the net.",
        "The season ended with a penalty shootout that decided the championship.",
        "Training focused on set pieces ahead of the away fixture on Saturday.",
        "The winger crossed the ball from the left and the header hit the post.",
        "Ticket prices for the home games rose again at the start of the season.",
    ],
    "gardening": [
        "Plant the tomato seedlings after the last frost when the soil is warm.",
        "Water the roses early in the morning so the leaves dry before evening.",
        "Compost from kitchen scraps and fallen leaves feeds the vegetable beds.",
        "Prune the apple trees in late winter while they are still dormant.",
        "Mulch around the shrubs keeps moisture in the soil and weeds out.",
        "Slugs ate most of the lettuce, so we put copper tape around the raised beds.",
        "Sow the carrot seeds thinly in rows and thin the seedlings later.",
        "The hedge needs trimming twice a year to keep its shape.",
        "Bees visited the lavender and foxgloves all through the summer.",
        "Divide the overgrown perennials in autumn and replant them with fresh compost.",
        "The greenhouse keeps the peppers and cucumbers warm on cold nights.",
        "Deadheading the flowers encourages the plants to bloom again.",
        "Clay soil drains slowly, so dig in grit and organic matter before planting.",
        "Tulip bulbs should go into the ground in October for a spring display.",
        "The lawn turned brown during the drought but recovered after the rain.",
        "Climbing beans need tall canes or a trellis to grow on.",
        "We harvested potatoes by lifting them carefully with a garden fork.",
        "Rotate the crops each year so pests and diseases do not build up in the soil.",
    ],
    "finance": [
        "Set aside part of every paycheck in a savings account for emergencies.",
        "The interest rate on the mortgage will rise when the fixed term ends.",
        "Paying off the credit card balance in full avoids expensive interest charges.",
        "A diversified portfolio of index funds lowers the risk of investing.",
        "The bank charged an overdraft fee when the account went below zero.",
        "Track your monthly spending to see where the budget is leaking money.",
        "Retirement contributions grow tax free until the money is withdrawn.",
        "The loan application asked for payslips and three months of bank statements.",
        "Inflation reduces the purchasing power of cash kept under the mattress.",
        "Compare the annual fees of pension providers before transferring your savings.",
        "A good credit score makes it easier to borrow at a lower rate.",
        "Dividends from the shares were reinvested to buy more units of the fund.",
        "The tax return is due at the end of January to avoid a penalty.",
        "Consolidating debts into one loan can reduce the total monthly repayment.",
        "Insurance premiums went up after the claim on the household policy.",
        "Automatic transfers on payday make saving a habit rather than a choice.",
        "The financial adviser recommended keeping six months of expenses in cash.",
        "Currency exchange fees can add up when paying by card abroad.",
    ],
}

SEED = 7


def make_document(rng: random.Random, topic: str, n_sentences: int) -> str:
    sentences = rng.sample(TOPICS[topic], n_sentences)
    cut = rng.randint(2, n_sentences - 2)
    return " ".join(sentences[:cut]) + "\n\n" + " ".join(sentences[cut:])


def build(root: Path) -> None:
    rng = random.Random(SEED)
    corpus = root / "corpus"
    topics = sorted(TOPICS)
    labels: list[tuple[str, str, str, str]] = []
    planted: list[dict] = []

    notes = corpus / "field_notes"
    notes.mkdir(parents=True, exist_ok=True)
    for i in range(20):
        topic = topics[i % len(topics)]
        name = f"note_{i:02d}.{'md' if i % 2 else 'txt'}"
        text = make_document(rng, topic, rng.randint(6, 9))
        (notes / name).write_text(text + "\n")
        labels.append(("field_notes", name, "", topic))
        planted.append({"text": text, "topic": topic})
    # Deliberately bad inputs, so the demo shows how skips are accounted for.
    (notes / "empty.txt").write_text("   \n\n")
    (notes / "copy_of_note_00.txt").write_text((notes / "note_00.txt").read_text())
    (notes / "scan.pdf").write_bytes(b"%PDF-1.4\x00\x01binary")

    tickets = corpus / "support_tickets"
    tickets.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(20):
        topic = topics[(i + 2) % len(topics)]
        text = make_document(rng, topic, rng.randint(6, 9))
        lines.append(json.dumps({"id": f"T{i:03d}", "text": text}))
        labels.append(("support_tickets", "tickets.jsonl", f"T{i:03d}", topic))
        planted.append({"text": text, "topic": topic})
    lines.insert(7, '{"id": "T999", "text": "this line is cut off')
    (tickets / "tickets.jsonl").write_text("\n".join(lines) + "\n")

    news = corpus / "newsletters"
    news.mkdir(parents=True, exist_ok=True)
    with open(news / "issues.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "title", "text"])
        for i in range(20):
            topic = topics[(i + 4) % len(topics)]
            text = make_document(rng, topic, rng.randint(6, 9))
            writer.writerow([f"N{i:03d}", f"{topic} digest", text])
            labels.append(("newsletters", "issues.csv", f"N{i:03d}", topic))
            planted.append({"text": text, "topic": topic})
        # multi-topic issues: real newsletters mix subjects; no single label, so not in labels.csv
        for i in range(20, 25):
            a, b = rng.sample(topics, 2)
            writer.writerow([f"N{i:03d}", "mixed digest",
                             make_document(rng, a, 6) + "\n\n" + make_document(rng, b, 6)])

    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "path", "record", "topic"])
        writer.writerows(labels)
    # the single-topic documents as one JSONL, for bench/discovery_quality.py
    (root / "planted_topics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in planted))


if __name__ == "__main__":
    build(Path(__file__).resolve().parent)
