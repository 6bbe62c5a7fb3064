r"""The generated corpus: a small probabilistic grammar of simple stories, deterministic for
a seed, so that language modelling runs on a fresh machine with no data."""
from __future__ import annotations

import random
from typing import Iterable

__all__ = ["STORY_SEPARATOR", "generate_stories"]

#: The text between two generated stories (a blank line).
STORY_SEPARATOR = "\n\n"

# --------------------------------------------------------------------------------------------
# A small probabilistic grammar of stories
# --------------------------------------------------------------------------------------------

_GIRLS = ["Lily", "Mia", "Anna", "Sara", "Emma", "Zoe", "Lucy", "Ella", "Rosa", "Nina", "Amy",
          "Kate", "Ruby", "Jill", "Maya", "Ivy"]
_BOYS = ["Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Noah", "Oscar", "Jake",
         "Luke", "Dan", "Eli", "Hugo", "Milo"]
_KINDS = {"she": ["girl", "cat", "bunny", "duck", "mouse", "princess"],
          "he": ["boy", "dog", "bear", "frog", "fox", "puppy"]}
_PRONOUNS = {"she": ("she", "her", "her", "herself"), "he": ("he", "him", "his", "himself")}
_TRAITS = ["little", "kind", "brave", "shy", "curious", "happy", "clever", "gentle", "silly",
           "small"]
_FEELINGS_GOOD = ["happy", "glad", "proud", "excited"]
_FEELINGS_BAD = ["sad", "scared", "worried", "upset"]
_RELATIONS = {"she": ["friend", "sister", "cousin", "neighbor"],
              "he": ["friend", "brother", "cousin", "neighbor"]}
# place, being there, going there, what one sees there
_PLACES = [
    ("park", "in the park", "to the park",
     ["a big tree", "a pond", "a long slide", "some ducks"]),
    ("forest", "in the forest", "into the forest",
     ["a tall tree", "a little path", "a quiet owl", "some mushrooms"]),
    ("garden", "in the garden", "into the garden",
     ["a red rose", "a busy bee", "a small pond", "a row of carrots"]),
    ("beach", "at the beach", "to the beach",
     ["the blue sea", "a big wave", "a sand castle", "a crab"]),
    ("farm", "on the farm", "to the farm",
     ["a brown cow", "a noisy pig", "a red barn", "some hens"]),
    ("school", "at school", "to school",
     ["a big map", "a box of crayons", "a fish tank", "a swing"]),
    ("lake", "by the lake", "to the lake",
     ["a little boat", "a green frog", "a wooden dock", "some swans"]),
    ("hill", "on the hill", "up the hill",
     ["a windmill", "a field of flowers", "some sheep", "a big rock"]),
    ("town", "in the town", "into town", ["a bakery", "a toy shop", "a fountain", "a red bus"]),
    ("kitchen", "in the kitchen", "into the kitchen",
     ["a warm oven", "a jar of cookies", "a big pot", "a sleepy cat"]),
]
_TIMID = {"little", "shy", "gentle", "small"}
_COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "shiny",
           "golden"]
# object, what one does with it
_OBJECTS = [
    ("ball", "play catch with it"), ("kite", "fly it high in the sky"),
    ("book", "read it"), ("hat", "wear it"), ("box", "open it"), ("shell", "keep it"),
    ("flower", "give it to mom"), ("key", "find the door it opens"),
    ("cake", "share it"), ("boat", "sail it on the water"), ("drum", "play a song on it"),
    ("balloon", "hold it tight"), ("car", "race it"), ("cup", "fill it with juice"),
]
_ACTIVITIES = ["play outside", "sing songs", "draw pictures", "run fast", "jump in puddles",
               "look at the stars", "build towers", "read books", "help mom", "dance"]
_TIMES = ["One day", "One sunny morning", "One rainy afternoon", "One evening",
          "On a warm day", "One cold morning"]
_OPENINGS = ["Once upon a time, there was", "There once was", "Once there was"]
_ENDINGS = ["The end.", "And they all lived happily.", "It was the best day ever.",
            "They never forgot that day."]


class _Character:
    def __init__(self, rng: random.Random, avoid: Iterable[str] = ()):
        self.gender = rng.choice(["she", "he"])
        names = [n for n in (_GIRLS if self.gender == "she" else _BOYS) if n not in avoid]
        self.name = rng.choice(names)
        self.kind = rng.choice(_KINDS[self.gender])
        self.trait = rng.choice(_TRAITS)
        self.subj, self.obj, self.poss, self.refl = _PRONOUNS[self.gender]

    @property
    def Subj(self) -> str:
        return self.subj.capitalize()

    @property
    def Poss(self) -> str:
        return self.poss.capitalize()


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _story(rng: random.Random) -> str:
    c = rng.choice
    hero = _Character(rng)
    friend = _Character(rng, avoid=[hero.name])
    place, at_place, to_place, sights = c(_PLACES)
    color = c(_COLORS)
    obj, use = c(_OBJECTS)
    thing = f"{color} {obj}"
    relation = c(_RELATIONS[friend.gender])
    good, bad = c(_FEELINGS_GOOD), c(_FEELINGS_BAD)

    s = [f"{c(_OPENINGS)} {_a(hero.trait)} {hero.kind} named {hero.name}."]
    s.append(c([f"{hero.Subj} loved to {c(_ACTIVITIES)}.",
                f"{hero.Subj} lived near the {place} and loved to {c(_ACTIVITIES)}.",
                f"Every day, {hero.name} liked to {c(_ACTIVITIES)} with {hero.poss} "
                f"{relation} {friend.name}."]))
    plot = rng.randrange(4)
    if plot == 0:  # finds something, a friend wants it, they share
        s.append(f"{c(_TIMES)}, {hero.name} found {_a(thing)} {at_place}.")
        s.append(f"{hero.Subj} wanted to {use}.")
        s.append(f"Then {friend.name} the {friend.kind} came by. {friend.Subj} saw the {obj} "
                 f"and wanted it too.")
        s.append(f'"Can I have the {obj}?" asked {friend.name}.')
        s.append(f"{hero.name} felt {bad}. {hero.Subj} did not want to give away "
                 f"{hero.poss} {thing}.")
        s.append(f"Then {hero.subj} had an idea. " f'"Let\'s share it!" said {hero.name}.')
        s.append(f"{hero.name} and {friend.name} took turns with the {obj}. "
                 f"They were both {good}.")
        moral = "that sharing makes everyone happy"
    elif plot == 1:  # loses something, a friend helps find it
        s.append(f"{hero.Subj} had {_a(thing)} that {hero.subj} loved very much.")
        s.append(f"{c(_TIMES)}, {hero.name} took the {obj} {to_place}.")
        s.append(f"{hero.Subj} saw {c(sights)} and ran to look. When {hero.subj} came back, "
                 f"the {obj} was gone!")
        s.append(f"{hero.name} was very {bad}. {hero.Subj} began to cry.")
        s.append(f'{friend.name} the {friend.kind} heard {hero.obj}. "Why are you crying?" '
                 f"asked {friend.name}.")
        s.append(f'"I lost my {thing}," said {hero.name}.')
        s.append(f'"I will help you," said {friend.name}. They looked everywhere.')
        s.append(f"At last, {friend.name} found the {obj} near {c(sights)}.")
        s.append(f'"Thank you!" said {hero.name}. {hero.Subj} gave {friend.name} a big hug.')
        moral = "that friends make every day better"
    elif plot == 2:  # something is stuck, the shy/small hero is brave
        s.append(f"{c(_TIMES)}, {hero.name} and {friend.name} played {at_place} with "
                 f"{friend.poss} {thing}.")
        s.append(f"The wind blew hard and the {obj} flew up into a tall tree.")
        s.append(f"{friend.name} was {bad}. " f'"My {obj} is stuck!" {friend.subj} said.')
        s.append(f"{hero.name} was {hero.trait}, but {hero.subj} wanted to help "
                 f"{hero.poss} {relation}." if hero.trait in _TIMID else
                 f"{hero.name} wanted to help {hero.poss} {relation}.")
        s.append(f"{hero.Subj} climbed the tree, one branch at a time, and got the {obj}.")
        s.append(f'"You are so brave!" said {friend.name}. {hero.name} felt {good}.')
        moral = "that being brave is not so hard"
    else:  # a trip, a small problem, a kind act
        s.append(f"{c(_TIMES)}, {hero.name} went to the {place} with {hero.poss} mom.")
        s.append(f"{hero.Subj} brought {hero.poss} {thing} and saw {c(sights)}.")
        s.append(f"{hero.Subj} met {friend.name}, {_a(friend.trait)} {friend.kind} who "
                 f"looked {bad}.")
        s.append(f'"What is wrong?" asked {hero.name}. '
                 f'"I have nothing to play with," said {friend.name}.')
        s.append(f"{hero.name} thought for a moment. Then {hero.subj} gave {friend.obj} "
                 f"the {thing}.")
        s.append(f"{friend.name} smiled and said, \"Thank you!\" Now {friend.subj} was "
                 f"{good} too.")
        moral = "that it is good to help others"
    s.append(c([f"From that day on, {hero.name} knew {moral}.",
                f"{hero.name} learned {moral}.", f"The {hero.kind} learned {moral}."]))
    s.append(c(_ENDINGS))
    # two paragraphs: the set-up and the rest
    return " ".join(s[:2]) + "\n" + " ".join(s[2:])


def generate_stories(num_chars: int | None = None, *, num_stories: int | None = None,
                     seed: int = 0) -> str:
    r"""Generate a deterministic corpus of simple stories.

    A small probabilistic grammar: each story has a hero and a friend with names, kinds and
    pronouns that stay consistent through the story, a place, a coloured object that recurs,
    one of four plots (sharing, a lost object, a brave rescue, a kind act) with dialogue, and
    a moral. That gives a small model real structure to learn (agreement, copying names and
    objects across sentences) at a character level, with no download. Stories are separated
    by :data:`STORY_SEPARATOR` (a blank line). About 1 MB takes well under a second.

    Args:
        num_chars (int, optional): generate whole stories until the text has at least this
            many characters. Defaults to 1,000,000 when ``num_stories`` is not given.
        num_stories (int, optional): generate exactly this many stories instead.
        seed (int): the same seed gives the same text. (default: ``0``)

    Example:
        >>> from graphformer.datasets import generate_stories
        >>> text = generate_stories(num_stories=2, seed=0)
        >>> text[:44]
        'Once upon a time, there was a curious boy na'
        >>> len(text.split("\n\n")), text == generate_stories(num_stories=2, seed=0)
        (2, True)
    """
    if num_chars is not None and num_stories is not None:
        raise ValueError("give num_chars or num_stories, not both")
    if num_chars is None and num_stories is None:
        num_chars = 1_000_000
    if num_chars is not None and num_chars < 1:
        raise ValueError(f"num_chars must be positive, got {num_chars}")
    if num_stories is not None and num_stories < 1:
        raise ValueError(f"num_stories must be positive, got {num_stories}")
    rng = random.Random(seed)
    stories: list[str] = []
    length = 0
    while (len(stories) < num_stories) if num_stories is not None else (length < num_chars):
        story = _story(rng)
        stories.append(story)
        length += len(story) + len(STORY_SEPARATOR)
    return STORY_SEPARATOR.join(stories) + "\n"
